//! config.json → every architecture's import-time `describe` (BERT family, GPT-2, Llama family,
//! ViT, ResNet, CLIP),
//! each with the weight index of a real fixture, and the Llama family's GGUF path (a config with
//! `general.architecture` goes through `LlamaConfig::from_gguf`, with a GGUF fixture's tensors).
#![no_main]

use inferox::architectures::{bert, clip, gpt2, llama, resnet, vit};
use inferox::gguf::GgufHeader;
use inferox::registry::ImportSource;
use inferox::weights::WeightIndex;
use inferox_fuzz::{repo_root, touch_error};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

struct Fixtures {
    config_path: PathBuf,
    /// An image-processor config, for the vision architectures.
    preprocessor: PathBuf,
    /// (name, weights): every describe runs against each.
    weights: Vec<(&'static str, WeightIndex)>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let root = repo_root().join("tests/fixtures");
        let st = |rel: &str| {
            WeightIndex::read(&[root.join(rel)])
                .unwrap_or_else(|e| panic!("fixture {rel} does not read: {e}"))
        };
        let gguf = GgufHeader::read(&root.join("gguf/qwen2-q8_0.gguf"))
            .expect("the qwen2 GGUF fixture reads")
            .weight_index();
        Fixtures {
            config_path: PathBuf::from("config.json"),
            weights: vec![
                ("bert", st("bert/bert_gelu_pooler/model/model.safetensors")),
                (
                    "xlm-roberta",
                    st("bert/xlm_roberta_silu_classifier/model/model.safetensors"),
                ),
                ("gpt2", st("decoders/gpt2/model/model.safetensors")),
                ("llama", st("decoders/llama/model/model.safetensors")),
                ("gguf", gguf),
                ("vit", st("vision/vit_pooler/model/model.safetensors")),
                ("resnet", st("vision/resnet_basic/model/model.safetensors")),
                ("clip", st("vision/clip/model/model.safetensors")),
            ],
            preprocessor: root.join("vision/vit_pooler/model/preprocessor_config.json"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    inferox_fuzz::guard_panics();
    let f = fixtures();
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let describes: [(&str, inferox::registry::DescribeFn); 6] = [
        ("bert", bert::describe),
        ("gpt2", gpt2::describe),
        ("llama", llama::describe),
        ("vit", vit::describe),
        ("resnet", resnet::describe),
        ("clip", clip::describe),
    ];
    for (_, weights) in &f.weights {
        for (tokenizer, max_seq_length) in [(Some("tokenizer.json"), None), (None, Some(128))] {
            let src = ImportSource {
                config_path: &f.config_path,
                config: &config,
                weights,
                tokenizer,
                max_seq_length,
                artifact: None,
                preprocessor: Some(&f.preprocessor),
            };
            for (_, describe) in &describes {
                match describe(&src) {
                    Ok(d) => {
                        let _ = serde_json::to_string(&d.io);
                        let _ = d.io.to_kserve();
                    }
                    Err(e) => touch_error(&e),
                }
            }
        }
    }
    // The GGUF path with other vocabulary sizes than the fixture's (`describe` takes it from
    // token_embd.weight).
    if let Some(arch) = config.get("general.architecture").and_then(|a| a.as_str()) {
        for vocab in [0, 1, 256, 49_152] {
            if let Ok(cfg) = llama::LlamaConfig::from_gguf(&config, arch, vocab) {
                if cfg.check().is_ok() {
                    let _ = (cfg.head_size(), cfg.max_sequence());
                }
            }
        }
    }
});
