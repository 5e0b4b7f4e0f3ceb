//! A `.npy` file → `npy::read_npy`, and the tensor written back out.
#![no_main]

use inferox_fuzz::{fresh, touch_error, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = fresh("npy");
    let path = write(dir, "input.npy", data);
    match inferox::npy::read_npy(&path) {
        Ok(tensor) => {
            let _ = (tensor.shape(), tensor.dtype());
            if let Err(e) = inferox::npy::write_npy(&dir.join("out.npy"), &tensor) {
                touch_error(&e);
            }
        }
        Err(e) => touch_error(&e),
    }
});
