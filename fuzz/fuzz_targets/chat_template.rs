//! A chat template → `chat::render` with a short conversation, as `chat` and `generate` render
//! it. The input is the template source (lossy UTF-8); a template that loops for long must end
//! with an error quickly (the renderer's fuel and output budget), never hang or exhaust memory.
#![no_main]

use inferox::chat::{ChatMessage, render};
use inferox_fuzz::touch_error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    inferox_fuzz::guard_panics();
    let template = String::from_utf8_lossy(data);
    let messages = [
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "What is the capital of France?"),
        ChatMessage::new("assistant", "Paris."),
        ChatMessage::new("user", "And of Italy?"),
    ];
    for (n, generation_prompt) in [(4, true), (1, false)] {
        match render(
            &template,
            &messages[messages.len() - n..],
            generation_prompt,
            "<s>",
            "</s>",
        ) {
            Ok(out) => {
                let _ = out.len();
            }
            Err(e) => touch_error(&e),
        }
    }
});
