//! A safetensors file → `weights::read_header` and `WeightIndex::read`, then what import derives
//! from the index (parameter count and bytes, dtype), and a lookup of every tensor.
#![no_main]

use inferox::weights::{WeightIndex, read_header};
use inferox_fuzz::{fresh, touch_error, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = fresh("safetensors");
    let path = write(dir, "model.safetensors", data);
    if let Err(e) = read_header(&path) {
        touch_error(&e);
    }
    match WeightIndex::read(&[path]) {
        Ok(index) => {
            let _ = index.parameter_count();
            let _ = index.parameter_bytes();
            let _ = index.float_dtype();
            for (name, t) in &index.tensors {
                let _ = (t.numel(), t.dtype(), t.is_parameter());
                let shape = t.shape.clone();
                if let Err(e) = index.checked(name, Some(&shape), true) {
                    touch_error(&e);
                }
            }
            if let Err(e) = inferox::weights::map_files(&index.files) {
                touch_error(&e);
            }
        }
        Err(e) => touch_error(&e),
    }
});
