//! `config.json` of GPT-2, mirroring transformers' `GPT2Config` (defaults as there).

use crate::common::{Activation, ConfigCheck};
use serde::Deserialize;

fn d_vocab() -> usize {
    50257
}
fn d_positions() -> usize {
    1024
}
fn d_embd() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_act() -> Activation {
    Activation::GeluTanh
}
fn d_eps() -> f64 {
    1e-5
}
fn d_true() -> bool {
    true
}

/// The fields of config.json this implementation uses.
#[derive(Clone, Debug, Deserialize)]
pub struct Gpt2Config {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_positions")]
    pub n_positions: usize,
    #[serde(default = "d_embd")]
    pub n_embd: usize,
    #[serde(default = "d_layers")]
    pub n_layer: usize,
    #[serde(default = "d_heads")]
    pub n_head: usize,
    /// Feed-forward size; `None` means 4 × n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "d_act")]
    pub activation_function: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub add_cross_attention: bool,
}

impl Gpt2Config {
    /// Feed-forward size (saturating: [`check_weights`](Self::check_weights) has compared it
    /// with the weights before anything is sized by it).
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(self.n_embd.saturating_mul(4))
    }

    /// Checks the config's numbers against the checkpoint (tensors under `prefix`) before
    /// anything is sized by them.
    pub fn check_weights(&self, check: &ConfigCheck<'_>, prefix: &str) -> inferox_core::Result<()> {
        let e = ("n_embd", Some(self.n_embd));
        check.shape(
            &format!("{prefix}wte.weight"),
            &[("vocab_size", Some(self.vocab_size)), e],
        )?;
        check.shape(
            &format!("{prefix}wpe.weight"),
            &[("n_positions", Some(self.n_positions)), e],
        )?;
        check.layers("n_layer", self.n_layer, &format!("{prefix}h."))?;
        if self.n_layer > 0 {
            check.shape(
                &format!("{prefix}h.0.attn.c_attn.weight"),
                &[e, ("3 × n_embd", self.n_embd.checked_mul(3))],
            )?;
            let inner = self.n_inner.or(self.n_embd.checked_mul(4));
            check.shape(
                &format!("{prefix}h.0.mlp.c_fc.weight"),
                &[e, ("n_inner", inner)],
            )?;
        }
        check.positions("n_positions", self.n_positions)?;
        check.positive("layer_norm_epsilon", self.layer_norm_epsilon)
    }

    /// Checks what this implementation supports; the message names the offending field.
    pub fn check(&self) -> Result<(), String> {
        if self.add_cross_attention {
            return Err("add_cross_attention: GPT-2 with cross-attention is not supported".into());
        }
        if self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        Ok(())
    }
}
