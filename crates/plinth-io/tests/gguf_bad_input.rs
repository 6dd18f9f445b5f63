//! Corrupt and hostile GGUF files: each must give a one-line error that names the file and
//! the problem — never a panic, never an allocation sized by a bogus header field.

use plinth_io::GgufFile;
use plinth_testutil::{fixture, write_temp, GgufBuilder};

fn open_err(path: &std::path::Path) -> String {
    let msg = GgufFile::open(path).expect_err("corrupt file must not open").to_string();
    assert!(msg.contains(&path.display().to_string()), "error does not name the file: {msg}");
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    msg
}

#[test]
fn tiny_fixture_parses_with_all_tensors() {
    let g = GgufFile::open(fixture("tiny-llama/model.gguf")).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.tensors.len(), 2 * 9 + 3);
    let q = g.tensor_info("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.shape, vec![64, 64]);
}

#[test]
fn wrong_magic() {
    let p = write_temp("magic.gguf", b"GGML\x03\x00\x00\x00 and some more bytes here");
    let msg = open_err(&p);
    assert!(msg.contains("not a GGUF file"), "{msg}");
}

#[test]
fn empty_file() {
    let p = write_temp("empty.gguf", b"");
    assert!(open_err(&p).contains("not a GGUF file"));
}

#[test]
fn unsupported_version() {
    let mut b = GgufBuilder::new();
    b.version = 1;
    let p = b.write("v1.gguf");
    assert!(open_err(&p).contains("GGUF version 1"));
}

#[test]
fn truncated_at_many_offsets() {
    let bytes = std::fs::read(fixture("tiny-llama/model.gguf")).unwrap();
    let len = bytes.len();
    let mut cuts: Vec<usize> = vec![3, 4, 7, 8, 15, 16, 23, 24, 30, 64, 200, 1000, 4000];
    cuts.extend([len / 4, len / 2, len - 100, len - 1]);
    for cut in cuts.into_iter().filter(|&c| c < len) {
        let p = write_temp(&format!("trunc-{cut}.gguf"), &bytes[..cut]);
        let msg = open_err(&p);
        assert!(msg.contains("truncated") || msg.contains("not a GGUF"), "cut at {cut}: {msg}");
    }
}

#[test]
fn absurd_tensor_count() {
    let mut bytes = GgufBuilder::new().kv_str("general.architecture", "llama").build();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let p = write_temp("count.gguf", &bytes);
    assert!(open_err(&p).contains("tensor count"));
}

#[test]
fn absurd_metadata_count_and_array_length() {
    let mut bytes = GgufBuilder::new().build();
    bytes[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(open_err(&write_temp("kv.gguf", &bytes)).contains("metadata count"));

    let mut payload = 4u32.to_le_bytes().to_vec();
    payload.extend(u64::MAX.to_le_bytes());
    let p = GgufBuilder::new().kv_raw("tokenizer.ggml.scores", 9, payload).write("arr.gguf");
    assert!(open_err(&p).contains("length of array"));

    let mut huge_string = (1u64 << 62).to_le_bytes().to_vec();
    huge_string.extend(b"abc");
    let p = GgufBuilder::new().kv_raw("general.name", 8, huge_string).write("str.gguf");
    open_err(&p);
}

#[test]
fn absurd_dimensions() {
    let p = GgufBuilder::new().tensor_raw("w", &[1 << 50, 1 << 50], 0, vec![0; 64]).write("dims.gguf");
    assert!(open_err(&p).contains("absurd"));
    let p = GgufBuilder::new().tensor_raw("w", &[0, 4], 0, vec![]).write("zero.gguf");
    assert!(open_err(&p).contains("absurd dimension 0"));
    // Dimensions that are individually plausible but whose data is not in the file.
    let p = GgufBuilder::new().tensor_raw("w", &[65536, 65536], 0, vec![0; 64]).write("big.gguf");
    assert!(open_err(&p).contains("truncated file: tensor 'w'"));
}

#[test]
fn unsupported_tensor_type() {
    let p = GgufBuilder::new().tensor_raw("blk.0.attn_q.weight", &[256], 16, vec![0; 66]).write("iq.gguf");
    let msg = open_err(&p);
    assert!(msg.contains("unsupported tensor type IQ") && msg.contains("blk.0.attn_q.weight"), "{msg}");
    let p = GgufBuilder::new().tensor_raw("w", &[32], 99, vec![0; 32]).write("t99.gguf");
    assert!(open_err(&p).contains("ggml type 99"));
}

#[test]
fn unknown_value_type_and_bad_bool() {
    let p = GgufBuilder::new().kv_raw("x", 13, vec![0; 8]).write("vt.gguf");
    assert!(open_err(&p).contains("unknown value type 13"));
    let p = GgufBuilder::new().kv_raw("flag", 7, vec![2]).write("bool.gguf");
    assert!(open_err(&p).contains("invalid bool"));
}

#[test]
fn every_value_type_round_trips() {
    let p = GgufBuilder::new()
        .kv_raw("u8", 0, vec![200])
        .kv_raw("i8", 1, vec![0xff])
        .kv_raw("u16", 2, 60000u16.to_le_bytes().to_vec())
        .kv_raw("i16", 3, (-300i16).to_le_bytes().to_vec())
        .kv_u32("u32", 4_000_000_000)
        .kv_raw("i32", 5, (-5i32).to_le_bytes().to_vec())
        .kv_f32("f32", 1.5)
        .kv_raw("bool", 7, vec![1])
        .kv_str("str", "héllo")
        .kv_raw("u64", 10, u64::MAX.to_le_bytes().to_vec())
        .kv_raw("i64", 11, i64::MIN.to_le_bytes().to_vec())
        .kv_raw("f64", 12, 2.25f64.to_le_bytes().to_vec())
        .kv_raw("nested", 9, {
            // array of 2 arrays of u8: [[1, 2], [3]]
            let mut p = 9u32.to_le_bytes().to_vec();
            p.extend(2u64.to_le_bytes());
            for inner in [&[1u8, 2][..], &[3u8][..]] {
                p.extend(0u32.to_le_bytes());
                p.extend((inner.len() as u64).to_le_bytes());
                p.extend(inner);
            }
            p
        })
        .write("values.gguf");
    let g = GgufFile::open(&p).unwrap();
    use plinth_io::Value::*;
    assert_eq!(g.get("u8"), Some(&U8(200)));
    assert_eq!(g.get("i8"), Some(&I8(-1)));
    assert_eq!(g.get("u16"), Some(&U16(60000)));
    assert_eq!(g.get("i16"), Some(&I16(-300)));
    assert_eq!(g.get("u32"), Some(&U32(4_000_000_000)));
    assert_eq!(g.get("i32"), Some(&I32(-5)));
    assert_eq!(g.get("f32"), Some(&F32(1.5)));
    assert_eq!(g.get("bool"), Some(&Bool(true)));
    assert_eq!(g.get_str("str"), Some("héllo"));
    assert_eq!(g.get("u64"), Some(&U64(u64::MAX)));
    assert_eq!(g.get("i64"), Some(&I64(i64::MIN)));
    assert_eq!(g.get("f64"), Some(&F64(2.25)));
    assert_eq!(g.get("nested"), Some(&Array(vec![Array(vec![U8(1), U8(2)]), Array(vec![U8(3)])])));
}

#[test]
fn random_corruption_never_panics() {
    let bytes = std::fs::read(fixture("tiny-llama/model.gguf")).unwrap();
    // The header and metadata are where parsing decisions are made; flip bytes there.
    let header = 1500.min(bytes.len());
    let mut state = 0x2545F4914F6CDD1Du64;
    for i in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let pos = (state as usize) % header;
            b[pos] = (state >> 32) as u8;
        }
        let p = write_temp(&format!("fuzz-{}.gguf", i % 8), &b);
        let _ = GgufFile::open(&p); // Ok or Err are both fine; a panic fails the test.
    }
}
