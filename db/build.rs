//! Hash the migrations so test templates are rebuilt whenever any of them changes.
use std::path::Path;

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("migrations folder") {
        let p = entry.expect("entry").path();
        if p.is_dir() { visit(&p, files) } else { files.push(p) }
    }
}

fn main() {
    // Read at run time: a build script binary may be reused from a checkout
    // at another path (the target folder is shared), so nothing path-like is
    // baked in at compile time.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    visit(&dir, &mut files);
    files.sort();
    // FNV-1a over names and contents: enough to tell versions of the folder apart.
    let mut h: u64 = 0xcbf29ce484222325;
    for f in files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.strip_prefix(&dir).expect("inside").to_string_lossy().into_owned();
        for b in name.bytes().chain(std::fs::read(&f).expect("readable")) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    println!("cargo:rustc-env=BMM_MIGRATIONS_DIGEST={h:016x}");
}
