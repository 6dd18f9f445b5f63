//! A classification head trained on a frozen encoder's sentence embeddings, written as a
//! Hugging Face sequence-classification directory and served back through plinth's own
//! loader: on the tiny random encoders (mean / cls pooling, BERT and RoBERTa tensor names),
//! on the real all-MiniLM-L6-v2 with a small sentiment set, and the data readers' edge cases.

use std::path::{Path, PathBuf};

use plinth_models::EncoderHead;
use plinth_tasks::{ClassifyOptions, EncoderModel, LabelScore};
use plinth_testutil::{fixture, minilm_dir};
use plinth_train::classify::{read_labelled, save_classifier, split_holdout, train_head, tune_classifier, ClassifyConfig, Labelled, ProbePooling};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plinth-classify-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pairs(rows: &[(&str, &str)]) -> Vec<Labelled> {
    rows.iter().map(|(t, l)| (t.to_string(), l.to_string())).collect()
}

/// Texts that differ only in one word (`river` -> `water`, `church` -> `faith`), amid fillers.
fn synthetic() -> Vec<Labelled> {
    let before = ["the", "a small", "during the season", "in the old town", "after the game", "near the park", "they said the", "every year the"];
    let after = ["was there", "in the north", "is known", "looked great", "and the school", ""];
    let mut out = Vec::new();
    for i in 0..24 {
        let (word, label) = if i % 2 == 0 { ("river", "water") } else { ("church", "faith") };
        let text = format!("{} {word} {}", before[i % before.len()], after[(i / 2) % after.len()]);
        out.push((text.trim().to_string(), label.to_string()));
    }
    out
}

fn accuracy(model: &EncoderModel, data: &[Labelled]) -> f32 {
    let texts: Vec<&str> = data.iter().map(|(t, _)| t.as_str()).collect();
    let got = model.classify(&texts, ClassifyOptions::default()).unwrap();
    got.iter().zip(data).filter(|(s, (_, l))| &s[0].label == l).count() as f32 / data.len() as f32
}

/// Checks that `dir` classifies `texts` exactly as the in-memory head does.
fn assert_same(what: &str, saved: &[Vec<LabelScore>], memory: &[Vec<LabelScore>]) {
    assert_eq!(saved.len(), memory.len());
    let mut worst = 0f32;
    for (i, (s, m)) in saved.iter().zip(memory).enumerate() {
        assert_eq!(s.len(), m.len(), "{what}: text {i}");
        // Same best label unless the top two tie within the tolerance.
        if s[0].label != m[0].label {
            assert!((m[0].score - m[1].score).abs() <= 2e-5, "{what}: text {i}: saved says {s:?}, memory {m:?}");
        }
        for m_ls in m {
            let s_ls = s.iter().find(|x| x.label == m_ls.label).unwrap();
            worst = worst.max((s_ls.score - m_ls.score).abs());
        }
    }
    assert!(worst <= 1e-5, "{what}: largest score difference {worst}");
    eprintln!("{what}: saved directory reproduces the in-memory head (max |d score| {worst:.2e})");
}

#[test]
fn tiny_encoders_learn_a_word_and_load_back() {
    let data = synthetic();
    let texts: Vec<&str> = data.iter().map(|(t, _)| t.as_str()).collect();
    let cfg = ClassifyConfig { epochs: 150, ..ClassifyConfig::default() };
    for (name, pooling, family) in [
        ("tiny-st-mean", ProbePooling::Mean, "bert"),
        ("tiny-st-cls", ProbePooling::Cls, "bert"),
        ("tiny-roberta", ProbePooling::Mean, "roberta"),
    ] {
        let base = EncoderModel::load(&fixture(&format!("encoders/{name}"))).unwrap();
        let mut epochs_seen = 0;
        let (head, report) = train_head(&base, &data, &[], &cfg, &mut |p| {
            if let plinth_train::ClassifyProgress::Epoch(_) = p {
                epochs_seen += 1
            }
        })
        .unwrap();
        assert_eq!(epochs_seen, cfg.epochs);
        assert_eq!(head.labels, ["faith", "water"]);
        assert_eq!(head.pooling, pooling);
        assert_eq!(report.baseline_train_accuracy, 0.5);
        let first = &report.epochs[0];
        eprintln!(
            "{name}: train accuracy {:.3} after epoch 1 (loss {:.3}), {:.3} after {} (loss {:.3}); {:.2}s embedding, {:.2}s training",
            first.train_accuracy, first.train_loss, report.train_accuracy, cfg.epochs, report.train_loss, report.embed_seconds, report.train_seconds
        );
        assert!(report.train_loss < first.train_loss, "{name}: the loss did not fall");
        assert!(report.train_accuracy >= 0.9, "{name}: train accuracy {}", report.train_accuracy);

        let out = scratch(name).join("clf");
        let files = save_classifier(&base, &head, &out).unwrap();
        assert!(files.contains(&"model.safetensors".to_string()) && files.contains(&"tokenizer.json".to_string()), "{files:?}");
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        let arch = if family == "bert" { "BertForSequenceClassification" } else { "RobertaForSequenceClassification" };
        assert_eq!(config["architectures"][0], arch);
        assert_eq!(config["id2label"]["1"], "water");
        assert_eq!(config["label2id"]["faith"], 0);
        assert_eq!(config["num_labels"], 2);
        assert_eq!(config["plinth_pooling"], pooling.name());
        assert_eq!(config["plinth_normalize"], base.normalize);
        // The body sits under the task prefix, as transformers names it.
        let st = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&st).unwrap();
        assert!(st.tensor(&format!("{family}.embeddings.word_embeddings.weight")).is_ok());
        assert_eq!(st.tensor("classifier.weight").unwrap().shape(), [2, head.dim]);

        let clf = EncoderModel::load(&out).unwrap();
        assert_eq!(clf.info().head, EncoderHead::SequenceClassification);
        assert_eq!(clf.info().labels, head.labels);
        let saved = clf.classify(&texts, ClassifyOptions::default()).unwrap();
        let memory = head.classify(&base, &texts).unwrap();
        assert_same(name, &saved, &memory);
        let right = memory.iter().zip(&data).filter(|(s, (_, l))| &s[0].label == l).count() as f32 / data.len() as f32;
        assert!((right - report.train_accuracy).abs() < 1e-6, "{name}: report {} vs {right}", report.train_accuracy);

        if name == "tiny-st-mean" {
            // The loader refuses a pooling it cannot compute rather than guessing.
            let cfg_path = out.join("config.json");
            let text = std::fs::read_to_string(&cfg_path).unwrap();
            std::fs::write(&cfg_path, text.replace("\"plinth_pooling\": \"mean\"", "\"plinth_pooling\": \"max\"")).unwrap();
            let err = EncoderModel::load(&out).unwrap_err().to_string();
            assert!(err.contains("plinth_pooling 'max'"), "{err}");
            std::fs::write(&cfg_path, text).unwrap();
        }
        // The directory is never overwritten and no staging directory is left behind.
        let err = save_classifier(&base, &head, &out).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("clf")]);
        std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
    }
}

#[test]
fn tune_from_files_with_holdout_and_retune() {
    let dir = scratch("tune");
    let csv = dir.join("train.csv");
    let mut text = String::from("label,text\n");
    for (t, l) in synthetic() {
        text.push_str(&format!("{l},\"{t}\"\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let cfg = ClassifyConfig { epochs: 150, eval_fraction: 0.25, ..ClassifyConfig::default() };
    let out = dir.join("clf");
    let report = tune_classifier(&fixture("encoders/tiny-st-mean"), &csv, None, &out, &cfg, &mut |_| {}).unwrap();
    assert_eq!((report.train_examples, report.eval_examples), (18, 6));
    assert_eq!(report.baseline_eval_accuracy, Some(0.5));
    let eval_acc = report.eval_accuracy.unwrap();
    eprintln!("tiny-st-mean from CSV: train {:.3}, held-out {:.3} (baseline 0.5)", report.train_accuracy, eval_acc);
    assert_eq!(report.out.as_deref(), Some(out.as_path()));
    // The held-out numbers are what the saved model scores on the held-out rows.
    let (_, held) = split_holdout(&read_labelled(&csv).unwrap(), 0.25, cfg.seed);
    let clf = EncoderModel::load(&out).unwrap();
    assert!((accuracy(&clf, &held) - eval_acc).abs() < 1e-6);

    // A trained classifier is a base too: its config's pooling is used, not the plain default.
    let again = tune_classifier(&out, &csv, Some(&csv), &dir.join("clf2"), &ClassifyConfig { epochs: 5, ..cfg }, &mut |_| {}).unwrap();
    assert!(again.normalize, "tiny-st-mean normalises; the retrained head must too");
    assert_eq!(again.eval_examples, 24);

    // A label that training never saw, and a taken output directory.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"the river\", \"label\": \"ocean\"}\n").unwrap();
    let err = tune_classifier(&fixture("encoders/tiny-st-mean"), &csv, Some(&bad), &dir.join("clf3"), &cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("'ocean' does not occur in the training data"), "{err}");
    let err = tune_classifier(&fixture("encoders/tiny-st-mean"), &csv, None, &out, &cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    // One label only.
    let one = dir.join("one.csv");
    std::fs::write(&one, "text,label\na,x\nb,x\n").unwrap();
    let err = tune_classifier(&fixture("encoders/tiny-st-mean"), &one, None, &dir.join("clf4"), &cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("at least 2"), "{err}");
    assert!(!dir.join("clf3").exists() && !dir.join("clf4").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

const TRAIN_POSITIVE: &[&str] = &[
    "I absolutely loved this movie, the acting was superb.",
    "The food was delicious and the staff were friendly.",
    "What a wonderful experience, I would do it again.",
    "This phone works perfectly and the battery lasts all day.",
    "The hotel room was clean, bright and very comfortable.",
    "Great book, I could not put it down.",
    "The concert was amazing and the crowd was full of energy.",
    "Excellent customer service, they solved my problem quickly.",
    "I am so happy with my new laptop.",
    "The view from the top was breathtaking.",
    "This is the best pizza I have ever had.",
    "Our guide was knowledgeable and fun.",
    "The software is intuitive and a joy to use.",
    "A delightful little café with fantastic coffee.",
    "The kids had a great time at the park.",
    "The update made everything faster and smoother.",
    "I highly recommend this restaurant to everyone.",
    "The shoes fit well and feel really comfortable.",
    "She gave a brilliant and inspiring speech.",
    "Shipping was fast and the package arrived in perfect condition.",
];

const TRAIN_NEGATIVE: &[&str] = &[
    "I hated this movie, it was boring and far too long.",
    "The food was cold and the waiter was rude.",
    "What a terrible experience, I will never go back.",
    "This phone keeps crashing and the battery dies in an hour.",
    "The hotel room was dirty and smelled awful.",
    "The book was dull and poorly written.",
    "The concert was a disappointment, the sound was awful.",
    "Customer service ignored my emails for weeks.",
    "I regret buying this laptop.",
    "The trip was exhausting and a complete waste of money.",
    "This is the worst pizza I have ever eaten.",
    "Our guide was late and unhelpful.",
    "The software is buggy and constantly freezes.",
    "The café was overpriced and the coffee tasted burnt.",
    "The kids were bored and miserable all afternoon.",
    "The update broke everything and made the app slower.",
    "I would not recommend this restaurant to anyone.",
    "The shoes fell apart after a week.",
    "His speech was confusing and painfully long.",
    "The package arrived late and the item was broken.",
];

const EVAL_POSITIVE: &[&str] = &[
    "The garden was beautiful and peaceful.",
    "This vacuum cleaner is powerful and easy to use.",
    "I enjoyed every minute of the show.",
    "The teacher was patient and kind with every student.",
    "Fantastic value for the price, very satisfied.",
    "The new bakery in town makes lovely bread.",
    "My flight was smooth and the crew was pleasant.",
    "The museum exhibition was fascinating.",
    "This game is incredibly fun to play with friends.",
    "The headphones sound crisp and clear.",
];

const EVAL_NEGATIVE: &[&str] = &[
    "The garden was overgrown and full of trash.",
    "This vacuum cleaner is noisy and barely picks up dust.",
    "I was bored through the entire show.",
    "The teacher was impatient and shouted at the students.",
    "Awful value, I feel ripped off.",
    "The bread from that bakery was stale and hard.",
    "My flight was delayed for hours and the crew was rude.",
    "The museum exhibition was dull and overcrowded.",
    "This game is frustrating and full of glitches.",
    "The headphones crackle and hurt my ears.",
];

fn labelled(pos: &[&str], neg: &[&str]) -> Vec<Labelled> {
    let mut v: Vec<Labelled> = pos.iter().map(|t| (t.to_string(), "positive".to_string())).collect();
    v.extend(neg.iter().map(|t| (t.to_string(), "negative".to_string())));
    v
}

#[test]
fn minilm_sentiment_probe_generalises() {
    let train = labelled(TRAIN_POSITIVE, TRAIN_NEGATIVE);
    let eval = labelled(EVAL_POSITIVE, EVAL_NEGATIVE);
    assert!(train.iter().all(|(t, _)| !eval.iter().any(|(e, _)| e == t)), "train and held-out sets overlap");
    let base = EncoderModel::load(&minilm_dir()).unwrap();
    let cfg = ClassifyConfig::default();
    let (head, report) = train_head(&base, &train, &eval, &cfg, &mut |_| {}).unwrap();
    let (before, after) = (report.baseline_eval_accuracy.unwrap(), report.eval_accuracy.unwrap());
    eprintln!(
        "all-MiniLM-L6-v2 sentiment probe ({} train / {} held-out, {} epochs): held-out accuracy {before:.3} (majority '{}') -> {after:.3}; train {:.3}; loss {:.3} -> {:.3} (held-out {:.3}); {:.2}s embedding, {:.2}s training",
        report.train_examples,
        report.eval_examples,
        cfg.epochs,
        report.majority_label,
        report.train_accuracy,
        report.epochs[0].train_loss,
        report.train_loss,
        report.eval_loss.unwrap(),
        report.embed_seconds,
        report.train_seconds,
    );
    for e in report.epochs.iter().filter(|e| e.epoch == 1 || e.epoch % 25 == 0) {
        eprintln!("  epoch {:>3}: train loss {:.4} acc {:.3} | held-out loss {:.4} acc {:.3}", e.epoch, e.train_loss, e.train_accuracy, e.eval_loss.unwrap(), e.eval_accuracy.unwrap());
    }
    assert_eq!(before, 0.5);
    assert!(after >= 0.8, "held-out accuracy {after}");
    assert!(report.train_accuracy >= 0.95, "train accuracy {}", report.train_accuracy);

    let out = scratch("minilm").join("sentiment");
    save_classifier(&base, &head, &out).unwrap();
    drop(base);
    let clf = EncoderModel::load(&out).unwrap();
    assert_eq!(clf.info().labels, ["negative", "positive"]);
    assert!((accuracy(&clf, &eval) - after).abs() < 1e-6);
    let texts: Vec<&str> = eval.iter().map(|(t, _)| t.as_str()).collect();
    let base = EncoderModel::load(&minilm_dir()).unwrap();
    assert_same("all-MiniLM-L6-v2", &clf.classify(&texts, ClassifyOptions::default()).unwrap(), &head.classify(&base, &texts).unwrap());
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn data_files_and_their_errors() {
    let dir = scratch("data");
    let ok = write(
        &dir,
        "ok.csv",
        "\u{feff}id,Label,TEXT\r\n1,pos,\"Great, really great\"\r\n2, neg ,\"He said \"\"never again\"\"\"\r\n\r\n3,pos,\"line one\nline two\"\r\n",
    );
    assert_eq!(
        read_labelled(&ok).unwrap(),
        pairs(&[("Great, really great", "pos"), ("He said \"never again\"", "neg"), ("line one\nline two", "pos")])
    );
    let tsv = write(&dir, "ok.tsv", "text\tlabel\na, b\tx\n\"tab\there\"\ty\n");
    assert_eq!(read_labelled(&tsv).unwrap(), pairs(&[("a, b", "x"), ("tab\there", "y")]));
    let jsonl = write(&dir, "ok.jsonl", "{\"text\": \"good\", \"label\": \"pos\"}\n\n{\"text\": \"bad\", \"label\": 0}\n");
    assert_eq!(read_labelled(&jsonl).unwrap(), pairs(&[("good", "pos"), ("bad", "0")]));

    let err = |name: &str, text: &str| {
        let p = write(&dir, name, text);
        let e = read_labelled(&p).unwrap_err().to_string();
        assert!(e.contains(name), "the error names the file: {e}");
        e
    };
    let e = err("nolabel.csv", "text,category\nhello,x\n");
    assert!(e.contains("no 'label' column") && e.contains("text, category"), "{e}");
    assert!(err("notext.csv", "sentence,label\nhello,x\n").contains("no 'text' column"));
    assert!(err("emptylabel.csv", "text,label\nhello,x\nworld,  \n").contains("line 3: empty label"));
    assert!(err("emptytext.csv", "text,label\n\"\",x\n").contains("line 2: empty text"));
    assert!(err("fields.csv", "text,label\nhello, world,x\n").contains("line 2: 3 fields, but the header has 2"));
    assert!(err("strayquote.csv", "text,label\nsay \"hi\",x\n").contains("line 2: a quote inside an unquoted field"));
    assert!(err("afterquote.csv", "text,label\n\"hi\" there,x\n").contains("line 2: 't' after a closing quote"));
    let blanks = write(&dir, "blanks.csv", "text,label\n\"hi, there\"  ,x\n \"quoted, after a blank\" , y\n");
    assert_eq!(read_labelled(&blanks).unwrap(), pairs(&[("hi, there", "x"), ("quoted, after a blank", "y")]));
    assert!(err("unclosed.csv", "text,label\nfine,x\n\"never closed,x\nmore,y\n").contains("line 3: a quoted field is never closed"));
    assert!(err("headeronly.csv", "text,label\n").contains("no examples"));
    assert!(err("bad.jsonl", "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\"}\n").contains("line 2: no 'label' field"));
    assert!(err("badjson.jsonl", "{\"text\": \"a\", \"label\": \"x\"\n").contains("line 1: not valid JSON"));
    std::fs::remove_dir_all(&dir).unwrap();
}
