//! What the caller asks for ([`GenerateOptions`]) and the settings in effect once the package's
//! generation_config.json defaults are applied and the values checked ([`Sampling`]).

use crate::manifest::GenerationInfo;
use crate::{Error, Result};

/// What the caller asks for; unset fields come from the package's generation_config.json.
#[derive(Clone, Debug, Default)]
pub struct GenerateOptions {
    /// Most tokens to generate (default: the package's, else 256).
    pub max_new_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy (default: greedy unless the package says to sample).
    pub temperature: Option<f64>,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p.
    pub top_p: Option<f64>,
    /// Penalise tokens already in the text (1.0 is none), as transformers does.
    pub repetition_penalty: Option<f64>,
    /// Seed of the sampler (default 0): the same seed gives the same sample.
    pub seed: Option<u64>,
    /// Texts that end the generation; they are not part of the output.
    pub stop: Vec<String>,
    /// End-of-sequence tokens (default: the package's).
    pub eos_token_ids: Option<Vec<u32>>,
}

/// Sampling settings after defaults are applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub repetition_penalty: f64,
    pub seed: u64,
    pub stop: Vec<String>,
    pub eos_token_ids: Vec<u32>,
}

impl Sampling {
    /// Applies the package's defaults under the caller's options, and checks the values.
    pub fn resolve(
        options: &GenerateOptions,
        package: Option<&GenerationInfo>,
    ) -> Result<Sampling> {
        let defaults = package.map(|g| g.defaults.clone()).unwrap_or_default();
        let sample_by_default = defaults.do_sample == Some(true);
        let temperature = options.temperature.unwrap_or(if sample_by_default {
            defaults.temperature.unwrap_or(1.0)
        } else {
            0.0
        });
        let pick = |user: Option<f64>, dflt: Option<f64>| {
            user.or(if sample_by_default { dflt } else { None })
        };
        let s = Sampling {
            max_new_tokens: options
                .max_new_tokens
                .or(defaults.max_new_tokens)
                .unwrap_or(256),
            temperature,
            top_k: options
                .top_k
                .or(if sample_by_default {
                    defaults.top_k
                } else {
                    None
                })
                .filter(|&k| k > 0),
            top_p: pick(options.top_p, defaults.top_p),
            repetition_penalty: options
                .repetition_penalty
                .or(defaults.repetition_penalty)
                .unwrap_or(1.0),
            seed: options.seed.unwrap_or(0),
            stop: options
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            eos_token_ids: options
                .eos_token_ids
                .clone()
                .or_else(|| package.map(|g| g.eos_token_ids.clone()))
                .unwrap_or_default(),
        };
        if s.temperature.is_nan() || s.temperature < 0.0 || s.temperature.is_infinite() {
            return Err(Error::InvalidArgument(format!(
                "temperature must be 0 (greedy) or positive, not {}",
                s.temperature
            )));
        }
        if let Some(p) = s.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::InvalidArgument(format!(
                "top-p must be in (0, 1], not {p}"
            )));
        }
        // 1 keeps every token: the same as no nucleus filter.
        let s = Sampling {
            top_p: s.top_p.filter(|&p| p < 1.0),
            ..s
        };
        if s.repetition_penalty.is_nan()
            || s.repetition_penalty <= 0.0
            || s.repetition_penalty.is_infinite()
        {
            return Err(Error::InvalidArgument(format!(
                "repetition penalty must be positive, not {}",
                s.repetition_penalty
            )));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_package() {
        let info = GenerationInfo {
            eos_token_ids: vec![2],
            defaults: crate::manifest::GenerationDefaults {
                do_sample: Some(true),
                temperature: Some(0.7),
                top_p: Some(0.9),
                max_new_tokens: Some(64),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Sampling::resolve(&GenerateOptions::default(), Some(&info)).unwrap();
        assert_eq!(
            (
                s.temperature,
                s.top_p,
                s.max_new_tokens,
                s.eos_token_ids.clone()
            ),
            (0.7, Some(0.9), 64, vec![2])
        );
        let greedy = GenerateOptions {
            temperature: Some(0.0),
            ..Default::default()
        };
        assert_eq!(
            Sampling::resolve(&greedy, Some(&info)).unwrap().temperature,
            0.0
        );
        let bad = GenerateOptions {
            temperature: Some(-1.0),
            ..Default::default()
        };
        assert!(Sampling::resolve(&bad, None).is_err());
    }
}
