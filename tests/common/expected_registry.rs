/// The model types every build registers (describing a model needs no backend), sorted.
pub fn expected_model_types() -> Vec<String> {
    [
        "bert",
        "camembert",
        "clip",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "gpt2",
        "graph",
        "gru",
        "llama",
        "lstm",
        "mistral",
        "mt5",
        "phi3",
        "qwen2",
        "qwen3",
        "resnet",
        "rnn",
        "roberta",
        "t5",
        "vit",
        "xlm-roberta",
    ]
    .map(String::from)
    .to_vec()
}

/// The backends a build with the enabled features must link, most preferred first.
pub fn expected_backends() -> Vec<String> {
    [
        ("candle", cfg!(feature = "candle")),
        ("torch", cfg!(feature = "torch")),
        ("tflite", cfg!(feature = "tflite")),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| name.to_string())
    .collect()
}

/// The (model_type, backend) pairs a build with the enabled features must register, sorted.
/// Shared by the binary's own unit test (src/main.rs) and the CLI test (tests/cli.rs), so that a
/// registration dropped by the linker fails CI.
pub fn expected_pairs() -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if cfg!(feature = "candle") {
        // candle implements every model type but the exported graphs.
        for t in expected_model_types().into_iter().filter(|t| t != "graph") {
            pairs.push((t, "candle".to_string()));
        }
    }
    if cfg!(feature = "torch") {
        for t in [
            "bert",
            "camembert",
            "clip",
            "gru",
            "lstm",
            "mt5",
            "resnet",
            "rnn",
            "roberta",
            "t5",
            "vit",
            "xlm-roberta",
        ] {
            pairs.push((t.to_string(), "torch".to_string()));
        }
    }
    if cfg!(feature = "tflite") {
        pairs.push(("graph".to_string(), "tflite".to_string()));
    }
    pairs.sort();
    pairs
}
