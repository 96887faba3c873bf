//! Compiles the vendored Kubernetes `generated.proto` files (proto/) into one descriptor set,
//! which the sandbox reads at run time to encode and decode protobuf bodies
//! (`src/sandbox/protobuf.rs`). protox is pure Rust: no protoc is needed.

use std::path::{Path, PathBuf};

fn protos(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("proto/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let root = Path::new("proto");
    let mut files = Vec::new();
    protos(root, &mut files);
    files.sort();
    let mut compiler = protox::Compiler::new([root]).expect("proto/ is an include path");
    compiler.include_imports(true).include_source_info(false);
    compiler
        .open_files(&files)
        .expect("the vendored proto files compile");
    let bytes = compiler.encode_file_descriptor_set();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set"));
    std::fs::write(out.join("kubernetes.fds"), bytes).expect("OUT_DIR is writable");
}
