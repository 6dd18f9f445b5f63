//! Retrieval-augmented answers over the committed corpus (`fixtures/corpus`, questions in
//! `fixtures/corpus-questions.jsonl`) with the real all-MiniLM-L6-v2 and SmolLM2-135M-Instruct.
//! Assertions are on what is deterministic: passages, line ranges, retrieval ranks, the
//! cache, the sources given to the model and that the prompt fits; never on the free text of
//! an answer beyond "non-empty".

use std::path::{Path, PathBuf};

use plinth_io::fetch::ModelLocation;
use plinth_models::load_decoder;
use plinth_tasks::rag::{answer, answer_context, passages_of, AnswerOptions, PassageIndex, CACHE_NAME};
use plinth_tasks::EncoderModel;
use plinth_tokenize::Tokenizer;
use serde_json::Value;

/// Retrieval depth the questions must be answered within (the CLI's default --top-k).
const K: usize = 4;

struct Question {
    question: String,
    answer: String,
    file: String,
    lines: (usize, usize),
}

fn questions() -> Vec<Question> {
    let text = std::fs::read_to_string(plinth_testutil::fixture("corpus-questions.jsonl")).unwrap();
    let qs: Vec<Question> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Question {
                question: v["question"].as_str().unwrap().into(),
                answer: v["answer"].as_str().unwrap().into(),
                file: v["file"].as_str().unwrap().into(),
                lines: (v["lines"][0].as_u64().unwrap() as usize, v["lines"][1].as_u64().unwrap() as usize),
            }
        })
        .collect();
    assert_eq!(qs.len(), 20);
    qs
}

/// A fresh copy of the corpus, so that caches and edits never touch the committed fixture.
fn corpus_copy(name: &str) -> PathBuf {
    let src = plinth_testutil::fixture("corpus");
    let dst = std::env::temp_dir().join(format!("plinth-rag-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.') {
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
    }
    dst
}

fn embedder() -> EncoderModel {
    EncoderModel::load(&plinth_testutil::minilm_dir()).unwrap()
}

/// Whether passage `i` of `index` holds the lines of `q`.
fn holds(index: &PassageIndex, i: usize, q: &Question) -> bool {
    let p = &index.passages[i];
    p.file == q.file && p.start_line <= q.lines.0 && q.lines.1 <= p.end_line
}

#[test]
fn every_question_finds_its_passage_in_the_top_4() {
    let m = embedder();
    let dir = corpus_copy("recall");
    let index = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap();
    let qs = questions();
    let (mut at1, mut atk) = (0, 0);
    for q in &qs {
        // The fixture itself: exactly one passage holds the answer's lines, and it has the answer.
        let owners: Vec<usize> = (0..index.passages.len()).filter(|&i| holds(&index, i, q)).collect();
        assert_eq!(owners.len(), 1, "{}: lines {:?} must lie in one passage", q.question, q.lines);
        assert!(index.passages[owners[0]].text.contains(&q.answer), "{}: passage lacks '{}'", q.question, q.answer);
        let hits = index.retrieve(&m, &q.question, K).unwrap();
        let rank = hits.iter().position(|h| h.index == owners[0]);
        println!("{:?}  {}  (best {:.3} {}:{})", rank.map(|r| r + 1), q.question, hits[0].score, index.passages[hits[0].index].file, index.passages[hits[0].index].start_line);
        at1 += usize::from(rank == Some(0));
        atk += usize::from(rank.is_some());
    }
    println!("{} passages; recall@1 {at1}/{}  recall@{K} {atk}/{}", index.passages.len(), qs.len(), qs.len());
    assert_eq!(atk, qs.len(), "every answer passage must be among the top {K}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Splits the way `open_corpus` does, on the embedder's own token counts.
fn count_with(m: &EncoderModel) -> impl Fn(&str) -> usize + '_ {
    |s: &str| m.tokenizer.inner().encode_fast(s, false).unwrap().len()
}

#[test]
fn passages_are_exact_line_ranges_covering_every_line_once() {
    let m = embedder();
    let dir = corpus_copy("lines");
    let index = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap();
    let files = plinth_tasks::rag::corpus_files(&dir).unwrap();
    assert_eq!(files.len(), 9, "8 documents and the README");
    let count = count_with(&m);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        let mine: Vec<_> = index.passages.iter().filter(|p| p.file == name).collect();
        assert!(!mine.is_empty(), "{name}");
        let mut covered = vec![0; lines.len()];
        for p in &mine {
            assert!(1 <= p.start_line && p.start_line <= p.end_line && p.end_line <= lines.len(), "{name}: {p:?}");
            assert_eq!(p.text, lines[p.start_line - 1..p.end_line].join("\n"), "{name}:{}-{}", p.start_line, p.end_line);
            assert!(count(&p.text) <= plinth_tasks::rag::PASSAGE_TOKENS, "{name}:{}: over the budget", p.start_line);
            for c in &mut covered[p.start_line - 1..p.end_line] {
                *c += 1;
            }
        }
        for (i, l) in lines.iter().enumerate() {
            if !l.trim().is_empty() {
                assert_eq!(covered[i], 1, "{name}:{} must be in exactly one passage", i + 1);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn long_paragraphs_and_lines_are_split_keeping_line_numbers() {
    // One token per word, so the budget is exact.
    let words = |s: &str| s.split_whitespace().count();
    let para: String = (1..=6).map(|i| format!("line {i} has five words")).collect::<Vec<_>>().join("\n");
    let long_line = (0..30).map(|i| format!("Sentence {i} is here.")).collect::<Vec<_>>().join(" ");
    let text = format!("## Section\n\n{para}\n\n\n{long_line}\n");
    let ps = passages_of("doc.md", &text, 14, &words);
    // The heading joins the paragraph under it; six five-word lines go two at a time.
    assert_eq!(ps[0].text, "## Section\n\nline 1 has five words\nline 2 has five words");
    let ranges: Vec<(usize, usize)> = ps.iter().take(3).map(|p| (p.start_line, p.end_line)).collect();
    assert_eq!(ranges, vec![(1, 4), (5, 6), (7, 8)], "{ps:?}");
    // The long line: parts of at most three four-word sentences, all numbered line 11.
    let line_parts: Vec<_> = ps.iter().filter(|p| p.start_line == 11).collect();
    assert_eq!(line_parts.len(), 10, "{ps:?}");
    for p in &line_parts {
        assert_eq!(p.end_line, 11);
        assert!(words(&p.text) <= 14 && long_line.contains(&p.text), "{p:?}");
    }
    assert_eq!(line_parts.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join(" "), long_line);
    assert_eq!(ps.len(), 3 + line_parts.len());
}

#[test]
fn cache_is_created_reused_and_invalidated_by_any_change() {
    let m = embedder();
    let dir = corpus_copy("cache");
    let cache = dir.join(CACHE_NAME);
    let mut embedded = 0;
    let first = PassageIndex::open_corpus(&m, &dir, &mut |n, _| embedded = n).unwrap();
    assert!(!first.cached && cache.exists() && first.cache_warning.is_none());
    assert_eq!(embedded, first.passages.len());
    let q = "Who is the current president of the Dunmore Chess Club?";

    let mut called = false;
    let second = PassageIndex::open_corpus(&m, &dir, &mut |_, _| called = true).unwrap();
    assert!(second.cached && !called, "an unchanged corpus is read from the cache");
    assert_eq!(second.passages, first.passages);
    // Bit-exact: the cache stores the f32s themselves.
    assert_eq!(second.retrieve(&m, q, 5).unwrap(), first.retrieve(&m, q, 5).unwrap());

    // An edited file invalidates it, and the new text is retrievable.
    let f = dir.join("dunmore-chess-club.md");
    let edited = std::fs::read_to_string(&f).unwrap() + "\n## Mascot\n\nThe club's mascot is a stuffed owl called Professor Gambit.\n";
    std::fs::write(&f, edited).unwrap();
    let third = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap();
    assert!(!third.cached);
    let hit = &third.retrieve(&m, "What is the name of the chess club's mascot?", 1).unwrap()[0];
    assert!(third.passages[hit.index].text.contains("Professor Gambit"), "{:?}", third.passages[hit.index]);
    assert!(PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap().cached);

    // So does a new file in a subdirectory; a hidden file and other extensions do not count.
    std::fs::write(dir.join(".notes.md"), "hidden").unwrap();
    std::fs::write(dir.join("data.csv"), "a,b").unwrap();
    assert!(PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap().cached);
    std::fs::create_dir_all(dir.join("more")).unwrap();
    std::fs::write(dir.join("more/extra.txt"), "An extra document.\n").unwrap();
    let fourth = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap();
    assert!(!fourth.cached);
    assert!(fourth.passages.iter().any(|p| p.file == "more/extra.txt"));
    assert!(!fourth.passages.iter().any(|p| p.file.contains("notes") || p.file.ends_with(".csv")));

    // A corrupt cache is ignored, not trusted.
    let bytes = std::fs::read(&cache).unwrap();
    std::fs::write(&cache, &bytes[..bytes.len() - 4]).unwrap();
    assert!(!PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap().cached);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_corpora_are_clear_errors() {
    let m = embedder();
    let e = PassageIndex::open_corpus(&m, Path::new("/no/such/corpus"), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("/no/such/corpus"), "{e}");
    let dir = std::env::temp_dir().join(format!("plinth-rag-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.csv"), "a").unwrap();
    let e = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains(".txt or .md"), "{e}");
    std::fs::write(dir.join("bad.txt"), [0xff, 0xfe, 0x00]).unwrap();
    let e = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("bad.txt") && e.contains("UTF-8"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// SmolLM2 answers three questions: the answer passage is among the sources given to the
/// model, the answer is non-empty, the prompt and answer fit the context; a small context
/// drops the lowest-ranked passages instead of overflowing; a base model is refused.
#[test]
fn smollm2_answers_from_the_retrieved_passages() {
    let m = embedder();
    let dir = corpus_copy("e2e");
    let index = PassageIndex::open_corpus(&m, &dir, &mut |_, _| {}).unwrap();
    let llm = load_decoder(&ModelLocation::Gguf(plinth_testutil::smollm2_gguf())).unwrap();
    let tok = Tokenizer::from_gguf(llm.gguf.as_ref().unwrap()).unwrap();
    let opts = AnswerOptions { max_tokens: 48, ..Default::default() };
    let qs = questions();
    for q in [&qs[0], &qs[9], &qs[19]] {
        let mut streamed = String::new();
        let a = answer(llm.model.as_ref(), &tok, &m, &index, &q.question, &opts, &mut |t| streamed.push_str(t)).unwrap();
        println!("{} -> {:?} cited {:?} sources {:?}", q.question, a.answer, a.cited, a.sources.iter().map(|s| format!("{}:{}-{}", s.file, s.start_line, s.end_line)).collect::<Vec<_>>());
        assert_eq!(a.sources.len(), K);
        assert_eq!(a.dropped, 0);
        assert!(a.retrieved);
        assert!(a.sources.iter().any(|s| s.file == q.file && s.start_line <= q.lines.0 && q.lines.1 <= s.end_line), "{}: {:?}", q.question, a.sources);
        assert_eq!(a.sources.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert!(a.sources.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(!a.answer.is_empty());
        assert_eq!(streamed.trim(), a.answer);
        assert!(a.cited.iter().all(|c| (1..=K).contains(c)));
        assert!(a.prompt_tokens + opts.max_tokens <= a.context_tokens, "{} + {} > {}", a.prompt_tokens, opts.max_tokens, a.context_tokens);
    }

    // A context too small for four passages: the lowest-ranked are dropped, never overflowed.
    let q = &qs[0];
    let small = AnswerOptions { max_tokens: 8, context: Some(400), ..Default::default() };
    let a = answer(llm.model.as_ref(), &tok, &m, &index, &q.question, &small, &mut |_| {}).unwrap();
    let ranked = index.retrieve(&m, &q.question, K).unwrap();
    println!("context 400: {} sources, {} dropped, prompt {} tokens", a.sources.len(), a.dropped, a.prompt_tokens);
    assert!(a.dropped >= 1 && !a.sources.is_empty() && a.sources.len() + a.dropped == K);
    for (s, r) in a.sources.iter().zip(&ranked) {
        assert_eq!((s.file.as_str(), s.start_line), (index.passages[r.index].file.as_str(), index.passages[r.index].start_line));
    }
    assert!(a.prompt_tokens + 8 <= 400);

    // One context file: whole when it fits, else its best passages (here: a forced small context).
    let file = dir.join("ostra-river-ferry.txt");
    let text = std::fs::read_to_string(&file).unwrap();
    let q = &qs[9];
    let a = answer_context(llm.model.as_ref(), &tok, None, &q.question, "ostra-river-ferry.txt", &text, &opts, &mut |_| {}).unwrap();
    assert!(!a.retrieved && a.sources.len() == 1);
    assert_eq!((a.sources[0].start_line, a.sources[0].end_line), (1, text.trim_end().lines().count()));
    let tight = AnswerOptions { max_tokens: 8, context: Some(300), ..Default::default() };
    let e = answer_context(llm.model.as_ref(), &tok, None, &q.question, "ostra-river-ferry.txt", &text, &tight, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("embedder"), "{e}");
    let a = answer_context(llm.model.as_ref(), &tok, Some(&m), &q.question, "ostra-river-ferry.txt", &text, &tight, &mut |_| {}).unwrap();
    assert!(a.retrieved && !a.sources.is_empty());
    assert!(a.sources.iter().any(|s| s.start_line <= q.lines.0 && q.lines.1 <= s.end_line), "{:?}", a.sources);

    // A base model without a chat template is refused with the reason.
    // (SmolLM2's own tokenizer.json without its tokenizer_config.json: no template.)
    let bare = std::env::temp_dir().join(format!("plinth-rag-bare-{}", std::process::id()));
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(plinth_testutil::fixture("tokenizer/smollm2-hf/tokenizer.json"), bare.join("tokenizer.json")).unwrap();
    let base_tok = Tokenizer::from_file(&bare.join("tokenizer.json")).unwrap();
    assert!(base_tok.chat_template().is_none());
    let e = answer(llm.model.as_ref(), &base_tok, &m, &index, &q.question, &opts, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("chat template"), "{e}");
    let _ = std::fs::remove_dir_all(bare);
    let _ = std::fs::remove_dir_all(dir);
}
