#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nmo_fuzz::targets::duration(data));
