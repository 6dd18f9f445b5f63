//! Chat templates: rendering a conversation into the prompt text a model was trained on, from
//! the Jinja template shipped with the model. Owns the Jinja environment set up to behave like
//! Hugging Face's `apply_chat_template` (trim_blocks, lstrip_blocks, Python string methods,
//! `raise_exception`, `strftime_now`, Python-style `tojson`).

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{context, Environment, ErrorKind};
use plinth_core::{Error, Result};

use crate::strftime::Civil;

const TEMPLATE_NAME: &str = "chat";

/// One turn of a conversation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    /// The turn's text (with images, the text parts joined).
    pub content: String,
    /// Set when the turn carries images: its parts in order. Templates then see `content` as
    /// the list of typed parts vision-language templates iterate (`{"type": "image"}`,
    /// `{"type": "text", "text": ...}`), as transformers passes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// A piece of a multimodal turn.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Text { text: String },
    /// A placeholder: the pixels travel beside the prompt, and the template writes the
    /// model's image token where the image goes.
    Image,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into(), parts: Vec::new() }
    }

    /// A turn of text and images in the given order.
    pub fn with_parts(role: impl Into<String>, parts: Vec<Part>) -> Self {
        let content = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                Part::Image => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        Message { role: role.into(), content, parts }
    }

    /// Image parts in this turn.
    pub fn images(&self) -> usize {
        self.parts.iter().filter(|p| matches!(p, Part::Image)).count()
    }
}

/// A parsed chat template with the special-token strings it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

fn template_err(what: &str, e: minijinja::Error) -> Error {
    // The detail alone drops the line number and the cause; the full chain is what helps.
    let mut msg = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::Template(msg)
}

impl ChatTemplate {
    /// Parses `source`. `bos_token`/`eos_token` are the strings templates see as `bos_token`
    /// and `eos_token`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        // Hugging Face renders with trim_blocks and lstrip_blocks on and jinja2's default of
        // dropping a single trailing newline; templates are written against exactly that.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_err("configuring the template engine", e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| Civil::now().format(&fmt));
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| template_err("cannot parse the chat template", e))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Renders the conversation; with `add_generation_prompt` the text ends where the
    /// assistant's reply should begin.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| template_err("chat template", e))?;
        // HF passes tools/documents as None when absent; templates test `tools is not none`.
        template
            .render(context! {
                messages => messages_value(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
                tools => (),
                documents => (),
            })
            .map_err(|e| template_err("rendering failed", e))
    }
}

/// Messages as the list of dicts HF templates index (`message['role']`, `message.content`).
fn messages_value(messages: &[Message]) -> Value {
    let list: Vec<Value> = messages
        .iter()
        .map(|m| {
            if m.parts.is_empty() {
                return Value::from_pairs([("role", Value::from(m.role.as_str())), ("content", Value::from(m.content.as_str()))]);
            }
            let parts: Vec<Value> = m
                .parts
                .iter()
                .map(|p| match p {
                    Part::Text { text } => Value::from_pairs([("type", "text"), ("text", text.as_str())]),
                    Part::Image => Value::from_pairs([("type", "image")]),
                })
                .collect();
            Value::from_pairs([("role", Value::from(m.role.as_str())), ("content", Value::from(parts))])
        })
        .collect();
    Value::from(list)
}

/// `tojson` as Hugging Face defines it: Python's `json.dumps` (", "/": " separators, no HTML
/// escaping, non-ASCII kept) rather than minijinja's compact, HTML-safe JSON, so that tool
/// schemas reach the prompt byte for byte as the model saw them in training.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([a, b]) => (a.clone(), b.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be a pair",
            ))
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let opts = JsonOpts {
        indent,
        sort_keys: sort_keys.unwrap_or(false),
        ensure_ascii: ensure_ascii.unwrap_or(false),
        item_sep,
        key_sep,
    };
    let mut out = String::new();
    write_json(&mut out, &value, &opts, 0)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<usize>,
    sort_keys: bool,
    ensure_ascii: bool,
    item_sep: String,
    key_sep: String,
}

fn write_json(
    out: &mut String,
    v: &Value,
    o: &JsonOpts,
    level: usize,
) -> std::result::Result<(), minijinja::Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => out.push_str(&py_float(f64::try_from(v.clone())?)),
        ValueKind::String => write_str(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Map => {
            let mut items: Vec<(String, Value)> = v
                .try_iter()?
                .map(|k| Ok((key_string(&k), v.get_item(&k)?)))
                .collect::<std::result::Result<_, minijinja::Error>>()?;
            if o.sort_keys {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, o, level, '{', '}', items.len(), |out, i| {
                write_str(out, &items[i].0, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, &items[i].1, o, level + 1)
            })?;
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, o, level, '[', ']', items.len(), |out, i| {
                write_json(out, &items[i], o, level + 1)
            })?;
        }
        _ => write_str(out, &v.to_string(), o.ensure_ascii),
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    o: &JsonOpts,
    level: usize,
    open: char,
    close: char,
    n: usize,
    mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), minijinja::Error>,
) -> std::result::Result<(), minijinja::Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(width) = o.indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * level));
        }
    };
    for i in 0..n {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        newline(out, level + 1);
        item(out, i)?;
    }
    newline(out, level);
    out.push(close);
    Ok(())
}

/// Python converts non-string keys with `str()`; booleans and None in JSON spelling.
fn key_string(k: &Value) -> String {
    match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_owned(),
        ValueKind::None | ValueKind::Undefined => "null".to_owned(),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.to_owned(),
        _ => k.to_string(),
    }
}

/// Python's `repr(float)` as `json.dumps` writes it.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust's `{:e}` gives "1e20"; Python writes "1e+20" and at least two exponent digits.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    format!("{f:?}")
}

fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str) -> String {
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        t.render(&[Message::new("user", "Hi \"there\" é\n")], true)
            .unwrap()
    }

    /// SmolVLM's template iterates typed content parts; transformers renders this conversation
    /// to exactly the expected string (checked with `apply_chat_template`).
    #[test]
    fn image_parts_render_as_typed_content() {
        let src = "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        let msgs = [
            Message::with_parts("user", vec![Part::Image, Part::Text { text: "What is this?".into() }]),
            Message::with_parts("assistant", vec![Part::Text { text: "A cat.".into() }]),
        ];
        assert_eq!(msgs[0].images(), 1);
        assert_eq!(msgs[0].content, "What is this?");
        assert_eq!(
            t.render(&msgs, true).unwrap(),
            "<|im_start|>User:<image>What is this?<end_of_utterance>\nAssistant: A cat.<end_of_utterance>\nAssistant:"
        );
    }

    #[test]
    fn tojson_is_python_style() {
        assert_eq!(
            render("{{ messages[0] | tojson }}"),
            r#"{"role": "user", "content": "Hi \"there\" é\n"}"#
        );
        assert_eq!(
            render("{{ {'a': [1, 2.5, none, true], 'b': {}} | tojson }}"),
            r#"{"a": [1, 2.5, null, true], "b": {}}"#
        );
        assert_eq!(
            render("{{ {'b': [1], 'a': 1} | tojson(indent=2, sort_keys=true) }}"),
            "{\n  \"a\": 1,\n  \"b\": [\n    1\n  ]\n}"
        );
        assert_eq!(render("{{ '<&>' | tojson }}"), r#""<&>""#);
        assert_eq!(py_float(1e20), "1e+20");
        assert_eq!(py_float(1.0), "1.0");
    }

    #[test]
    fn trims_blocks_and_knows_python_methods() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content.strip().upper() }}]\n  {% endif %}\n{% endfor %}\n";
        assert_eq!(render(src), "[HI \"THERE\" É]\n");
        assert_eq!(
            render("{{ bos_token }}{{ eos_token }}{{ tools is none }}"),
            "<s></s>True"
        );
    }

    #[test]
    fn raise_exception_is_a_template_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
    }

    #[test]
    fn strftime_now_is_available() {
        let year = render("{{ strftime_now('%Y') }}");
        assert!(year.len() == 4 && year.starts_with('2'), "{year}");
    }

    #[test]
    fn syntax_errors_are_template_errors() {
        let err = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{err}");
    }
}
