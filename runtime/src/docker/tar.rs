//! A minimal, deterministic ustar writer for Docker build contexts held in
//! memory (a Dockerfile and one bundle; no directories, no links).

const BLOCK: usize = 512;

/// A tar archive of regular files, each `(path, mode, contents)`, owned by
/// root with mtime 0 so the same inputs give the same bytes.
pub(crate) fn archive(files: &[(&str, u32, &[u8])]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (path, mode, data) in files {
        out.extend_from_slice(&header(path, *mode, data.len())?);
        out.extend_from_slice(data);
        let pad = (BLOCK - data.len() % BLOCK) % BLOCK;
        out.resize(out.len() + pad, 0);
    }
    // Two zero blocks end the archive.
    out.resize(out.len() + 2 * BLOCK, 0);
    Ok(out)
}

fn header(path: &str, mode: u32, size: usize) -> Result<[u8; BLOCK], String> {
    if path.is_empty() || path.len() > 99 || !path.is_ascii() || path.starts_with('/') || path.contains("..") {
        return Err(format!("tar entry name {path:?} is not a short relative ASCII path"));
    }
    // 11 octal digits hold sizes below 8 GiB.
    if size as u64 >= 8 * 1024 * 1024 * 1024 {
        return Err(format!("tar entry {path} is too large ({size} bytes)"));
    }
    let mut h = [0u8; BLOCK];
    h[..path.len()].copy_from_slice(path.as_bytes());
    put_octal(&mut h[100..108], u64::from(mode & 0o7777));
    put_octal(&mut h[108..116], 0); // uid
    put_octal(&mut h[116..124], 0); // gid
    put_octal(&mut h[124..136], size as u64);
    put_octal(&mut h[136..148], 0); // mtime
    h[156] = b'0'; // regular file
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}");
    h[148..154].copy_from_slice(digits.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    Ok(h)
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(s.as_bytes());
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_tar_reads_the_archive() {
        let big = vec![b'x'; 1300];
        let bytes = archive(&[("Dockerfile", 0o644, b"FROM scratch\n"), ("server.mjs", 0o644, &big)]).unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ctx.tar");
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new("tar").arg("-xvf").arg(&file).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "tar failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(dir.path().join("Dockerfile")).unwrap(), b"FROM scratch\n");
        assert_eq!(std::fs::read(dir.path().join("server.mjs")).unwrap(), big);
    }

    #[test]
    fn same_input_same_bytes_and_bad_names_refused() {
        let a = archive(&[("a", 0o644, b"1")]).unwrap();
        assert_eq!(a, archive(&[("a", 0o644, b"1")]).unwrap());
        assert!(archive(&[("../etc/passwd", 0o644, b"")]).is_err());
        assert!(archive(&[("/abs", 0o644, b"")]).is_err());
        assert!(archive(&[("", 0o644, b"")]).is_err());
    }
}
