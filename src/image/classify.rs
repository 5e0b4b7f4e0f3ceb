//! The image tasks on a loaded model: preprocessing from the package's image hint, image
//! classification (softmax over `logits`, labels from the package), and raw outputs.

use super::{ImagePreprocessor, RgbImage};
use crate::loader::LoadedModel;
use crate::tensor::{HostTensor, NamedTensors};
use crate::{Error, Result};
use std::path::Path;

/// One class of an image-classification result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// The label (`id2label` of the source config; `LABEL_<id>` where it has none).
    pub label: String,
    /// Id of the class.
    pub id: usize,
    /// Softmax probability.
    pub score: f32,
}

/// What [`LoadedModel::classify_images`] returns.
#[derive(Clone, Debug)]
pub struct Classification {
    /// Per image, the `top_k` most likely classes, best first.
    pub predictions: Vec<Vec<Prediction>>,
    /// The raw `logits`, `[images, labels]`.
    pub logits: HostTensor,
}

/// The `top_k` classes of each row of `logits` (`[rows, labels]`) by softmax probability, with
/// labels from `labels` (`LABEL_<id>` for ids it lacks).
pub fn top_k(
    logits: &HostTensor,
    labels: &std::collections::BTreeMap<u32, String>,
    k: usize,
) -> Result<Vec<Vec<Prediction>>> {
    let (values, &[rows, n]) = (logits.as_f32(), logits.shape()) else {
        return Err(Error::Output {
            name: "logits".into(),
            message: format!("shape {:?} is not [batch, labels]", logits.shape()),
        });
    };
    let values = values.ok_or_else(|| Error::Output {
        name: "logits".into(),
        message: format!("dtype is {}, expected float32", logits.dtype()),
    })?;
    Ok(values
        .chunks(n.max(1))
        .take(rows)
        .map(|row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .take(k)
                .map(|id| Prediction {
                    label: labels
                        .get(&(id as u32))
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{id}")),
                    id,
                    score: exp[id] / sum,
                })
                .collect()
        })
        .collect())
}

impl LoadedModel {
    /// The image preprocessor of this package's image input.
    pub fn image_preprocessor(&self) -> Result<ImagePreprocessor> {
        ImagePreprocessor::from_schema(self.io())?.ok_or_else(|| {
            Error::Unsupported(format!(
                "this {} package takes no images (it has no input with an image hint)",
                self.info().model_type
            ))
        })
    }

    /// The model inputs for decoded images (`pixel_values`).
    pub fn preprocess_images(&self, images: &[RgbImage]) -> Result<NamedTensors> {
        let pre = self.image_preprocessor()?;
        let pixels = pre.preprocess(images)?;
        Ok([(pre.input_name(), pixels)].into_iter().collect())
    }

    /// Decodes the image files, preprocesses them as one batch and runs the model.
    pub fn run_images(&self, paths: &[impl AsRef<Path>]) -> Result<NamedTensors> {
        let images = paths
            .iter()
            .map(|p| RgbImage::open(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let inputs = self.preprocess_images(&images)?;
        self.run(&inputs)
    }

    /// Classifies the image files (one batch): the `top_k` labels of each by softmax score.
    ///
    /// ```no_run
    /// # fn main() -> inferox::Result<()> {
    /// use inferox::prelude::*;
    /// let package = Package::open(std::path::Path::new("vit.pkg"))?;
    /// let model = package.load(&LoadOptions::default())?;
    /// let result = model.classify_images(&["cat.jpg", "dog.png"], 3)?;
    /// for p in &result.predictions[0] {
    ///     println!("{:.3} {}", p.score, p.label);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn classify_images(
        &self,
        paths: &[impl AsRef<Path>],
        top_k: usize,
    ) -> Result<Classification> {
        if self.io().output("logits").is_none() {
            return Err(Error::Unsupported(format!(
                "this {} package has no classification head (no `logits` output)",
                self.info().model_type
            )));
        }
        let mut outputs = self.run_images(paths)?;
        let logits = outputs.remove("logits").ok_or_else(|| Error::Output {
            name: "logits".into(),
            message: "missing from the model's outputs".into(),
        })?;
        let predictions = self::top_k(&logits, &self.info().labels, top_k)?;
        Ok(Classification {
            predictions,
            logits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_softmax_best_first_with_labels() {
        let logits = HostTensor::from_f32(vec![2, 3], vec![0.0, 2.0, 1.0, 5.0, 5.0, -1.0]).unwrap();
        let labels = [(1, "one".to_string())].into_iter().collect();
        let p = top_k(&logits, &labels, 2).unwrap();
        assert_eq!(p[0][0].label, "one");
        assert_eq!(p[0][1].label, "LABEL_2");
        let e: f32 = [0.0f32, 2.0, 1.0].iter().map(|v| (v - 2.0).exp()).sum();
        assert!((p[0][0].score - 1.0 / e).abs() < 1e-6);
        // Ties keep the lower id first.
        assert_eq!((p[1][0].id, p[1][1].id), (0, 1));
        assert_eq!(top_k(&logits, &labels, 10).unwrap()[0].len(), 3);
    }
}
