//! Chat templates: a package's Jinja template (from tokenizer_config.json, chat_template.jinja or
//! GGUF metadata) rendered with minijinja the way transformers renders it (`trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string methods, `raise_exception`, `strftime_now`).

use crate::generate::{GenerateOptions, Generation, TextStream};
use crate::loader::LoadedModel;
use crate::{Error, Result};
use minijinja::{Environment, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and text.
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The subset of strftime that chat templates use to date their system prompts.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS[(m - 1) as usize];
    format
        .replace("%Y", &y.to_string())
        .replace("%m", &format!("{m:02}"))
        .replace("%d", &format!("{d:02}"))
        .replace("%B", name)
        .replace("%b", &name[..3])
}

/// Instructions a chat template may run: real templates need a few thousand per message; a
/// template that loops for minutes runs out and fails.
pub const TEMPLATE_FUEL: u64 = 20_000_000;
/// Largest rendered prompt, in bytes (far beyond any model's context).
pub const TEMPLATE_OUTPUT_LIMIT: usize = 16 << 20;

/// Collects rendered text up to [`TEMPLATE_OUTPUT_LIMIT`], failing beyond it.
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_OUTPUT_LIMIT {
            return Err(std::io::Error::other("output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `template` for `messages`, ending with the assistant's turn prompt when
/// `add_generation_prompt`. Rendering is bounded: at most [`TEMPLATE_FUEL`] instructions and
/// [`TEMPLATE_OUTPUT_LIMIT`] bytes of output, beyond which it fails with a clear error.
pub fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", strftime_now);
    env.set_fuel(Some(TEMPLATE_FUEL));
    let invalid = |e: minijinja::Error| match e.kind() {
        ErrorKind::OutOfFuel => Error::Unsupported(format!(
            "chat template: stopped after {TEMPLATE_FUEL} instructions (a runaway loop?)"
        )),
        ErrorKind::WriteFailure => Error::Unsupported(format!(
            "chat template: the rendered prompt passed {} MiB",
            TEMPLATE_OUTPUT_LIMIT >> 20
        )),
        _ => Error::Unsupported(format!("chat template: {e:#}")),
    };
    env.add_template("chat", template).map_err(invalid)?;
    let mut out = Capped(Vec::new());
    env.get_template("chat")
        .map_err(invalid)?
        .render_captured_to(
            context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token,
                eos_token => eos_token,
            },
            &mut out,
        )
        .map_err(invalid)?;
    String::from_utf8(out.0)
        .map_err(|_| Error::Unsupported("chat template: the output is not UTF-8".into()))
}

/// A package's chat template with the texts of its BOS and EOS tokens, ready to render.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    template: String,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    /// The prompt for `messages`, ready for the assistant's turn.
    pub fn prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        render(&self.template, messages, true, &self.bos, &self.eos)
    }
}

impl LoadedModel {
    /// The package's chat template (read once; render it as often as needed).
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let info = self.package.info();
        let template_path = info
            .generation
            .as_ref()
            .and_then(|g| g.chat_template.clone())
            .ok_or_else(|| {
                Error::Unsupported(
                    "this package has no chat template (use `inferox generate` for plain completion)"
                        .into(),
                )
            })?;
        let template = self.package.file(&template_path)?.read_to_string()?;
        let generation = info.generation.clone().unwrap_or_default();
        let pre = self.preprocessor()?;
        let token = |id: Option<u32>| id.and_then(|i| pre.token_text(i)).unwrap_or_default();
        Ok(ChatTemplate {
            template,
            bos: token(generation.bos_token_id),
            eos: token(generation.eos_token_ids.first().copied()),
        })
    }

    /// The prompt the package's chat template makes of `messages`, ready for the assistant's
    /// turn.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String> {
        self.chat_template()?.prompt(messages)
    }

    /// Streams the assistant's reply to `messages`.
    pub fn stream_chat(
        &self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
    ) -> Result<TextStream<'_>> {
        let prompt = self.chat_prompt(messages)?;
        // The template already holds the special tokens.
        let ids = self.tokenize(&prompt, false)?;
        self.stream_ids(ids, options)
    }

    /// The assistant's reply to `messages`.
    pub fn chat(&self, messages: &[ChatMessage], options: &GenerateOptions) -> Result<Generation> {
        let mut stream = self.stream_chat(messages, options)?;
        for piece in stream.by_ref() {
            piece?;
        }
        Ok(stream.into_generation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_like_transformers() {
        let out = render(CHATML, &[ChatMessage::new("user", "Hi")], true, "", "").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_blocks_and_exceptions() {
        let t = "{% for m in messages %}\n  {{ m.content.strip().upper() }}{% if m.role.startswith('u') %}!{% endif %}\n{% endfor %}";
        let out = render(t, &[ChatMessage::new("user", "  hey ")], false, "", "").unwrap();
        // What Python's jinja2 gives with trim_blocks and lstrip_blocks.
        assert_eq!(out, "  HEY!");
        let t = "{{ raise_exception('roles must alternate') }}";
        let err = render(t, &[], false, "", "").unwrap_err();
        assert!(err.to_string().contains("roles must alternate"), "{err}");
        let err = render("{% for %}", &[], false, "", "").unwrap_err();
        assert!(err.to_string().starts_with("chat template:"), "{err}");
    }

    /// Regression: nested `range(100000)` loops ran for minutes.
    #[test]
    fn runaway_templates_stop() {
        let start = std::time::Instant::now();
        let t = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = render(t, &[], false, "", "").unwrap_err().to_string();
        assert!(err.contains("stopped after"), "{err}");
        let t = "{% set s = 'x' * 10000000 %}{% for i in range(100) %}{{ s }}{% endfor %}";
        let err = render(t, &[], false, "", "").unwrap_err().to_string();
        assert!(err.contains("passed 16 MiB"), "{err}");
        assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
        // A long real conversation is far inside the budget.
        let messages: Vec<ChatMessage> = (0..500)
            .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, "some text"))
            .collect();
        let out = render(CHATML, &messages, true, "", "").unwrap();
        assert_eq!(out.matches("<|im_start|>").count(), 502);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_413), (2025, 11, 21));
        assert!(strftime_now("%d %b %Y".into()).len() >= 11);
    }
}
