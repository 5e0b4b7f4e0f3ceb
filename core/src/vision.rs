//! Image preprocessing settings: what a Hugging Face image processor (`preprocessor_config.json`)
//! does to a picture before the model sees it, written out as explicit steps — convert to RGB,
//! resize, center-crop, rescale, normalise — so the manifest says exactly what happens and the
//! runtime needs no knowledge of processor classes.
//!
//! The steps follow transformers' PIL image processors (`ViTImageProcessor`,
//! `ConvNextImageProcessor`, `CLIPImageProcessor`, and their shared `BaseImageProcessor`
//! fields): <https://github.com/huggingface/transformers/blob/main/src/transformers/image_processing_backends.py>.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// A resampling filter, with the numbering PIL (and so `preprocessor_config.json`) uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// PIL 0.
    Nearest,
    /// PIL 1 (Lanczos, a = 3).
    Lanczos,
    /// PIL 2 (triangle).
    Bilinear,
    /// PIL 3 (cubic convolution, a = -0.5).
    Bicubic,
    /// PIL 4.
    Box,
    /// PIL 5.
    Hamming,
}

impl Resample {
    /// The filter of PIL's number `code`.
    pub fn from_pil(code: u64) -> Option<Resample> {
        Some(match code {
            0 => Resample::Nearest,
            1 => Resample::Lanczos,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            4 => Resample::Box,
            5 => Resample::Hamming,
            _ => return None,
        })
    }
}

/// A height and a width, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

/// The size an image is resized to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeTo {
    /// Exactly this size (the aspect ratio is not kept).
    Exact(ImageSize),
    /// The shorter side to `shortest_edge`, the other side in proportion (truncated), as
    /// transformers' `get_resize_output_image_size`; with `longest_edge`, the longer side is
    /// kept within it as `get_size_with_aspect_ratio` does.
    ShortestEdge {
        shortest_edge: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        longest_edge: Option<usize>,
    },
}

impl ResizeTo {
    /// The (height, width) an image of `height` × `width` is resized to.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        match *self {
            ResizeTo::Exact(s) => (s.height, s.width),
            ResizeTo::ShortestEdge {
                shortest_edge,
                longest_edge: None,
            } => {
                let (short, long) = (height.min(width), height.max(width));
                let new_long = (shortest_edge as f64 * long as f64 / short as f64) as usize;
                if width <= height {
                    (new_long, shortest_edge)
                } else {
                    (shortest_edge, new_long)
                }
            }
            ResizeTo::ShortestEdge {
                shortest_edge,
                longest_edge: Some(max),
            } => {
                let (h, w) = (height as f64, width as f64);
                let (lo, hi) = (h.min(w), h.max(w));
                let mut size = shortest_edge;
                let mut raw = None;
                if hi / lo * size as f64 > max as f64 {
                    let r = max as f64 * lo / hi;
                    raw = Some(r);
                    size = r.round_ties_even() as usize; // Python's round()
                }
                let side = |long: f64, short: f64| match raw {
                    Some(r) => (r * long / short) as usize,
                    None => (size as f64 * long / short) as usize,
                };
                if (height <= width && height == size) || (width <= height && width == size) {
                    (height, width)
                } else if width < height {
                    (side(h, w), size)
                } else {
                    (size, side(w, h))
                }
            }
        }
    }
}

/// The resize step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    /// Target size.
    #[serde(flatten)]
    pub to: ResizeTo,
    /// Filter, as PIL applies it to 8-bit RGB.
    pub resample: Resample,
}

/// How an image becomes a model input: decoded and converted to 8-bit RGB, resized (if
/// `resize`), center-cropped (if `center_crop`; zero-padded where the image is smaller),
/// multiplied by `rescale_factor`, then normalised per channel with `mean` and `std`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImagePreprocessing {
    /// The image-processor config it came from, relative to the package root.
    pub config: String,
    /// The processor class it follows (`ViTImageProcessor`, ...), for reference.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub processor: String,
    /// Resizing, when the processor resizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
    /// Center crop, when the processor crops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_crop: Option<ImageSize>,
    /// Scale applied to raw pixel values first (1/255 for 8-bit images; 1 when off).
    pub rescale_factor: f64,
    /// Per-channel mean subtracted after rescaling (zeros when off).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation divided by after subtracting the mean (ones when off).
    pub std: Vec<f64>,
    /// Axis order of the input: `nhwc` or `nchw`.
    pub layout: String,
}

/// Defaults of a processor class: (do_resize, size, resample, do_center_crop, crop, mean, std).
struct ProcessorDefaults {
    name: &'static str,
    /// How `size` is read: ConvNext's `shortest_edge` with `crop_pct`, or as transformers'
    /// `get_size_dict` reads it with or without `default_to_square`.
    size: SizeRule,
    default_size: ResizeTo,
    resample: Resample,
    center_crop: bool,
    mean: [f64; 3],
    std: [f64; 3],
}

#[derive(Clone, Copy, PartialEq)]
enum SizeRule {
    Square,
    ShortestEdge,
    ConvNext,
}

const IMAGENET_STANDARD: [f64; 3] = [0.5, 0.5, 0.5];
const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

const PROCESSORS: &[ProcessorDefaults] = &[
    ProcessorDefaults {
        name: "ViTImageProcessor",
        size: SizeRule::Square,
        default_size: ResizeTo::Exact(ImageSize {
            height: 224,
            width: 224,
        }),
        resample: Resample::Bilinear,
        center_crop: false,
        mean: IMAGENET_STANDARD,
        std: IMAGENET_STANDARD,
    },
    ProcessorDefaults {
        name: "ConvNextImageProcessor",
        size: SizeRule::ConvNext,
        default_size: ResizeTo::ShortestEdge {
            shortest_edge: 384,
            longest_edge: None,
        },
        resample: Resample::Bicubic,
        center_crop: false,
        mean: IMAGENET_STANDARD,
        std: IMAGENET_STANDARD,
    },
    ProcessorDefaults {
        name: "CLIPImageProcessor",
        size: SizeRule::ShortestEdge,
        default_size: ResizeTo::ShortestEdge {
            shortest_edge: 224,
            longest_edge: None,
        },
        resample: Resample::Bicubic,
        center_crop: true,
        mean: CLIP_MEAN,
        std: CLIP_STD,
    },
];

impl ImagePreprocessing {
    /// Names of the image processors this reads.
    pub fn supported_processors() -> Vec<&'static str> {
        PROCESSORS.iter().map(|p| p.name).collect()
    }

    /// Reads a Hugging Face image-processor config (`preprocessor_config.json`, parsed as
    /// `config`, at `path`; `rel` is its package-relative name) into explicit steps with the
    /// semantics of transformers' processor class named in it (`image_processor_type`, or the
    /// older `feature_extractor_type`). Errors name the file and the field.
    pub fn from_processor_config(config: &Value, path: &Path, rel: &str) -> Result<Self> {
        let err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let class = ["image_processor_type", "feature_extractor_type"]
            .iter()
            .find_map(|k| config.get(*k).and_then(Value::as_str))
            .ok_or_else(|| {
                err("no `image_processor_type`: cannot tell which image processor it is for".into())
            })?;
        let base = class
            .trim_end_matches("Pil")
            .trim_end_matches("Fast")
            .replace("FeatureExtractor", "ImageProcessor");
        let defaults = PROCESSORS.iter().find(|p| p.name == base).ok_or_else(|| {
            err(format!(
                "image processor `{class}` is not supported (supported: {})",
                Self::supported_processors().join(", ")
            ))
        })?;
        let flag = |key: &str, default: bool| -> Result<bool> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| err(format!("`{key}` is {v}, expected true or false"))),
            }
        };
        let number = |key: &str| -> Result<Option<f64>> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| err(format!("`{key}` is {v}, expected a number"))),
            }
        };
        let triple = |key: &str, default: [f64; 3]| -> Result<Vec<f64>> {
            let bad = |v: &Value| err(format!("`{key}` is {v}, expected 3 numbers or one"));
            match config.get(key) {
                None | Some(Value::Null) => Ok(default.to_vec()),
                Some(Value::Array(a)) if a.len() == 3 => a
                    .iter()
                    .map(|x| x.as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad(x)))
                    .collect(),
                Some(v) => v.as_f64().map(|x| vec![x; 3]).ok_or_else(|| bad(v)),
            }
        };
        let pixels = |key: &str, v: &Value| -> Result<usize> {
            v.as_u64()
                .filter(|&n| (1..=1 << 16).contains(&n))
                .map(|n| n as usize)
                .ok_or_else(|| err(format!("`{key}` is {v}, expected a size from 1 to 65536")))
        };
        // transformers' get_size_dict: an int is a square or a shortest edge; a dict names
        // height/width or shortest_edge (with longest_edge).
        let size_dict = |key: &str, square: bool| -> Result<Option<ResizeTo>> {
            let Some(v) = config.get(key).filter(|v| !v.is_null()) else {
                return Ok(None);
            };
            if v.is_u64() {
                let n = pixels(key, v)?;
                return Ok(Some(if square {
                    ResizeTo::Exact(ImageSize {
                        height: n,
                        width: n,
                    })
                } else {
                    ResizeTo::ShortestEdge {
                        shortest_edge: n,
                        longest_edge: None,
                    }
                }));
            }
            let field = |name: &str| -> Result<Option<usize>> {
                v.get(name)
                    .filter(|x| !x.is_null())
                    .map(|x| pixels(&format!("{key}.{name}"), x))
                    .transpose()
            };
            match (
                field("height")?,
                field("width")?,
                field("shortest_edge")?,
                field("longest_edge")?,
            ) {
                (Some(height), Some(width), None, None) => {
                    Ok(Some(ResizeTo::Exact(ImageSize { height, width })))
                }
                (None, None, Some(shortest_edge), longest_edge) => {
                    Ok(Some(ResizeTo::ShortestEdge {
                        shortest_edge,
                        longest_edge,
                    }))
                }
                _ => Err(err(format!(
                    "`{key}` is {v}: expected {{\"height\", \"width\"}} or {{\"shortest_edge\"}} \
                     (with an optional \"longest_edge\")"
                ))),
            }
        };

        let mut resize = None;
        let mut center_crop = None;
        if flag("do_resize", true)? {
            let to = size_dict("size", defaults.size == SizeRule::Square)?
                .unwrap_or(defaults.default_size);
            let resample = match config.get("resample") {
                None | Some(Value::Null) => defaults.resample,
                Some(v) => v.as_u64().and_then(Resample::from_pil).ok_or_else(|| {
                    err(format!(
                        "`resample` is {v}: expected a PIL filter number (0 nearest, 1 lanczos, \
                         2 bilinear, 3 bicubic, 4 box, 5 hamming)"
                    ))
                })?,
            };
            if defaults.size == SizeRule::ConvNext {
                // ConvNextImageProcessor: below 384, resize the shortest edge to
                // shortest_edge / crop_pct and crop a square; from 384, warp to a square.
                let ResizeTo::ShortestEdge {
                    shortest_edge: edge,
                    ..
                } = to
                else {
                    return Err(err(format!(
                        "`size` must have `shortest_edge` for {class}, got {}",
                        config["size"]
                    )));
                };
                let square = ImageSize {
                    height: edge,
                    width: edge,
                };
                if edge < 384 {
                    let crop_pct = number("crop_pct")?.unwrap_or(224.0 / 256.0);
                    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
                        return Err(err(format!("`crop_pct` is {crop_pct}, expected 0 < x ≤ 1")));
                    }
                    let edge_before_crop = (edge as f64 / crop_pct) as usize;
                    resize = Some(Resize {
                        to: ResizeTo::ShortestEdge {
                            shortest_edge: edge_before_crop,
                            longest_edge: None,
                        },
                        resample,
                    });
                    center_crop = Some(square);
                } else {
                    resize = Some(Resize {
                        to: ResizeTo::Exact(square),
                        resample,
                    });
                }
            } else {
                resize = Some(Resize { to, resample });
            }
        }
        if flag("do_center_crop", defaults.center_crop)? {
            let crop = match size_dict("crop_size", true)? {
                None => ImageSize {
                    height: 224,
                    width: 224,
                },
                Some(ResizeTo::Exact(s)) => s,
                Some(_) => {
                    return Err(err(format!(
                        "`crop_size` is {}: expected {{\"height\", \"width\"}}",
                        config["crop_size"]
                    )));
                }
            };
            center_crop = Some(crop);
        }
        let rescale_factor = if flag("do_rescale", true)? {
            number("rescale_factor")?.unwrap_or(1.0 / 255.0)
        } else {
            1.0
        };
        let (mean, std) = if flag("do_normalize", true)? {
            (
                triple("image_mean", defaults.mean)?,
                triple("image_std", defaults.std)?,
            )
        } else {
            (vec![0.0; 3], vec![1.0; 3])
        };
        if let Some(s) = std.iter().find(|s| **s == 0.0) {
            return Err(err(format!("`image_std` holds {s}: cannot divide by zero")));
        }
        Ok(ImagePreprocessing {
            config: rel.to_string(),
            processor: defaults.name.to_string(),
            resize,
            center_crop,
            rescale_factor,
            mean,
            std,
            layout: "nchw".to_string(),
        })
    }

    /// The (height, width) of the model input for an image of `height` × `width`.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let resized = self
            .resize
            .map_or((height, width), |r| r.to.output_size(height, width));
        self.center_crop.map_or(resized, |c| (c.height, c.width))
    }

    /// The steps in a few words: `resize to 224×224 (bilinear), crop 224×224, rescale, normalize`.
    pub fn summary(&self) -> String {
        let mut steps = Vec::new();
        if let Some(r) = self.resize {
            let filter = serde_json::to_value(r.resample).unwrap_or_default();
            let filter = filter.as_str().unwrap_or_default();
            steps.push(match r.to {
                ResizeTo::Exact(s) => format!("resize to {}×{} ({filter})", s.width, s.height),
                ResizeTo::ShortestEdge {
                    shortest_edge,
                    longest_edge,
                } => format!(
                    "shortest edge to {shortest_edge}{} ({filter})",
                    longest_edge.map_or(String::new(), |l| format!(", longest at most {l}"))
                ),
            });
        }
        if let Some(c) = self.center_crop {
            steps.push(format!("center crop {}×{}", c.width, c.height));
        }
        if self.rescale_factor != 1.0 {
            steps.push(format!("rescale ×{:.6}", self.rescale_factor));
        }
        if self.mean.iter().any(|&m| m != 0.0) || self.std.iter().any(|&s| s != 1.0) {
            steps.push("normalize".into());
        }
        steps.join(", ")
    }

    /// The fixed (height, width) every image comes out at, when the steps fix it.
    pub fn fixed_size(&self) -> Option<ImageSize> {
        match (self.center_crop, self.resize.map(|r| r.to)) {
            (Some(c), _) => Some(c),
            (None, Some(ResizeTo::Exact(s))) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(config: Value) -> Result<ImagePreprocessing> {
        ImagePreprocessing::from_processor_config(
            &config,
            Path::new("x/preprocessor_config.json"),
            "preprocessor_config.json",
        )
    }

    #[test]
    fn convnext_crops_below_384_and_warps_above() {
        let p = read(json!({"image_processor_type": "ConvNextImageProcessor",
            "size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3}))
        .unwrap();
        assert_eq!(
            p.resize.unwrap().to,
            ResizeTo::ShortestEdge {
                shortest_edge: 256,
                longest_edge: None
            }
        );
        assert_eq!(p.fixed_size().unwrap().height, 224);
        assert_eq!(p.output_size(300, 451), (224, 224));
        let p = read(json!({"image_processor_type": "ConvNextImageProcessor",
            "size": {"shortest_edge": 384}}))
        .unwrap();
        assert_eq!(p.center_crop, None);
        assert_eq!(p.output_size(300, 451), (384, 384));
    }

    #[test]
    fn clip_defaults_and_old_int_sizes() {
        let p = read(
            json!({"feature_extractor_type": "CLIPFeatureExtractor", "size": 224,
            "crop_size": 224}),
        )
        .unwrap();
        assert_eq!(p.processor, "CLIPImageProcessor");
        assert_eq!(p.resize.unwrap().resample, Resample::Bicubic);
        assert_eq!(p.resize.unwrap().to.output_size(300, 451), (224, 336));
        assert_eq!(p.mean, CLIP_MEAN.to_vec());
        let p = read(
            json!({"image_processor_type": "ViTImageProcessor", "size": 32,
            "do_normalize": false, "do_rescale": false}),
        )
        .unwrap();
        assert_eq!(p.output_size(7, 9), (32, 32));
        assert_eq!((p.rescale_factor, p.std[0]), (1.0, 1.0));
    }

    #[test]
    fn round_trips_through_the_manifest() {
        let p = read(json!({"image_processor_type": "ConvNextImageProcessor",
            "size": {"shortest_edge": 224}}))
        .unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v["resize"],
            json!({"shortest_edge": {"shortest_edge": 256}, "resample": "bicubic"})
        );
        assert_eq!(v["center_crop"], json!({"height": 224, "width": 224}));
        assert_eq!(serde_json::from_value::<ImagePreprocessing>(v).unwrap(), p);
    }

    #[test]
    fn shortest_and_longest_edge() {
        let to = ResizeTo::ShortestEdge {
            shortest_edge: 100,
            longest_edge: Some(150),
        };
        assert_eq!(to.output_size(100, 400), (38, 150));
        assert_eq!(to.output_size(200, 250), (100, 125));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = read(json!({"image_processor_type": "DetrImageProcessor"})).unwrap_err();
        assert!(
            e.to_string()
                .contains("DetrImageProcessor` is not supported"),
            "{e}"
        );
        let e =
            read(json!({"image_processor_type": "ViTImageProcessor", "resample": 9})).unwrap_err();
        assert!(e.to_string().contains("`resample` is 9"), "{e}");
        let e = read(json!({"image_processor_type": "ViTImageProcessor", "size": {"x": 1}}))
            .unwrap_err();
        assert!(e.to_string().contains("`size` is"), "{e}");
        let e = read(json!({"image_processor_type": "ViTImageProcessor", "image_std": [1, 0, 1]}))
            .unwrap_err();
        assert!(e.to_string().contains("divide by zero"), "{e}");
        let e = read(json!({"image_processor_type": "ViTImageProcessor", "size": 0})).unwrap_err();
        assert!(e.to_string().contains("from 1 to 65536"), "{e}");
        assert!(read(json!({})).is_err());
    }
}
