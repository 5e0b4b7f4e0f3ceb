//! Silero VAD registered from outside inferox, against the package's own runtime for its
//! safetensors file: the speech probability of every chunk of real speech (espeak-ng) and of
//! silence, streamed with the state carried over, within 1e-4 of the `silero-vad` package's
//! tinygrad_model.py run by tinygrad (reference.py made tests/fixtures/reference.json, and
//! checked there that the same layers with the package's TorchScript weights give its ONNX
//! model's probabilities). Needs the model: `scripts/fetch-models.sh silero`.

use inferox::{LoadOptions, LoadPackage};
use silero_vad::{CHUNK, Detector, SAMPLE_RATE};
use std::path::{Path, PathBuf};

const TOLERANCE: f32 = 1e-4;

fn weights() -> PathBuf {
    let models = std::env::var_os("INFEROX_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/inferox/models")
        });
    let path = models.join("silero-vad/silero_vad/data/silero_vad_16k.safetensors");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh silero",
        path.display()
    );
    path
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference(key: &str) -> Vec<f32> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap();
    serde_json::from_value(json[key].clone()).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: chunk count");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= TOLERANCE, "{what}: max abs difference {worst}");
}

#[test]
fn streams_speech_and_silence_as_the_packages_own_runtime_does() {
    assert!(inferox::registry::find(silero_vad::MODEL_TYPE, "candle").is_some());
    let dir = tempfile::tempdir().unwrap();
    let package = silero_vad::import(&weights(), &dir.path().join("vad.pkg")).unwrap();
    assert_eq!(package.info().model_type, "silero-vad");
    assert_eq!(package.info().family, Some(inferox::Family::Recurrent));
    // float32 runs the backend's packed kernel where the CPU has it; float64 candle's ops.
    for dtype in [inferox::DType::Float32, inferox::DType::Float64] {
        let options = LoadOptions {
            dtype: Some(dtype),
            ..Default::default()
        };
        let detector = Detector::new(package.load(&options).unwrap());
        check_detector(detector, &format!("{dtype}"));
    }
    // A batch of two streams, the second a copy of the first, row for row.
    let model = package.load(&LoadOptions::default()).unwrap();
    let speech = silero_vad::read_wav(&fixtures().join("speech_16k.wav")).unwrap();
    let chunk = &speech[60 * CHUNK - silero_vad::CONTEXT..61 * CHUNK];
    let audio = inferox::HostTensor::from_f32(vec![2, chunk.len()], [chunk, chunk].concat());
    let out = model
        .run(&[("audio", audio.unwrap())].into_iter().collect())
        .unwrap();
    let p = out.get("speech_probability").unwrap().as_f32().unwrap();
    assert_eq!(p[0], p[1]);
    let state = out.get("next_state").unwrap();
    assert_eq!(state.shape(), [2, 2, silero_vad::HIDDEN]);
}

/// `detector` on speech and silence against the reference.
fn check_detector(mut detector: Detector, what: &str) {
    let speech = silero_vad::read_wav(&fixtures().join("speech_16k.wav")).unwrap();
    let want = reference("speech_16k.wav");
    let got = detector.probabilities(&speech).unwrap();
    assert_close(&format!("{what} speech"), &got, &want);
    // Real speech is found, and the half second of silence around it is not speech.
    assert!(got.iter().filter(|&&p| p > 0.9).count() > 40, "{got:?}");
    assert!(got[..10].iter().all(|&p| p < 0.1), "{:?}", &got[..10]);

    let silence = vec![0f32; 2 * SAMPLE_RATE as usize];
    let got = detector.probabilities(&silence).unwrap();
    assert_close(&format!("{what} silence"), &got, &reference("silence_2s"));
    assert!(got.iter().all(|&p| p < 0.05));

    // The state matters: speech chunks run without their history give other values.
    detector.reset();
    let mid = 60 * CHUNK;
    let fresh = detector.push(&speech[mid..mid + CHUNK]).unwrap();
    assert!(
        (fresh - want[60]).abs() > TOLERANCE,
        "{fresh} vs {}",
        want[60]
    );
}

#[test]
fn the_command_line_prints_the_same_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("vad.pkg");
    let cli = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_silero-vad"))
            .args(args)
            .output()
            .unwrap()
    };
    let succeeded = |out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        (String::from_utf8(out.stdout).unwrap(), err)
    };
    let w = weights();
    succeeded(cli(&[
        "import".as_ref(),
        w.as_os_str(),
        "--output".as_ref(),
        pkg.as_os_str(),
    ]));
    let wav = fixtures().join("speech_16k.wav");
    let (stdout, segments) = succeeded(cli(&["detect".as_ref(), pkg.as_os_str(), wav.as_os_str()]));
    let printed: Vec<f32> = stdout
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_close("cli", &printed, &reference("speech_16k.wav"));
    assert!(segments.contains("speech 0."), "{segments}");

    // Another sampling rate is refused with what to do.
    let wav = dir.path().join("8k.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for _ in 0..800 {
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let out = cli(&["detect".as_ref(), pkg.as_os_str(), wav.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("8000 Hz") && err.contains("resample"),
        "{err}"
    );
}
