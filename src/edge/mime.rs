//! The `Content-Type` of a deserialized file: from its name's extension,
//! else from its first bytes. A short table of what web pages and common
//! downloads use; everything else is `application/octet-stream`, which a
//! browser downloads rather than renders (and the gateway sends
//! `X-Content-Type-Options: nosniff` so it does not guess).

/// Content types by lower-case extension.
const BY_EXTENSION: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("car", "application/vnd.ipld.car"),
];

/// The content type for a file called `name` whose content starts with
/// `head` (a few hundred bytes are enough).
pub fn content_type(name: Option<&str>, head: &[u8]) -> &'static str {
    if let Some(ext) = name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e) {
        let ext = ext.to_ascii_lowercase();
        if let Some((_, ty)) = BY_EXTENSION.iter().find(|(e, _)| *e == ext) {
            return ty;
        }
    }
    sniff(head)
}

/// A type from magic numbers, for names without a known extension (a bare
/// CID has none). Deliberately never HTML: content named only by its hash
/// must not become a page that runs script on the gateway's origin.
fn sniff(head: &[u8]) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\0asm", "application/wasm"),
    ];
    if let Some((_, ty)) = MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return ty;
    }
    // Text if the start is UTF-8 without control bytes (a multi-byte
    // character cut at the end of `head` is allowed).
    let text = match std::str::from_utf8(head) {
        Ok(t) => Some(t),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    match text {
        Some(t) if !t.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_then_sniffing() {
        assert_eq!(
            content_type(Some("index.HTML"), b""),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type(Some("a.png"), b"text"), "image/png");
        assert_eq!(content_type(None, b"\x89PNG\r\n\x1a\nxx"), "image/png");
        assert_eq!(content_type(None, b"hello\n"), "text/plain; charset=utf-8");
        assert_eq!(content_type(None, b"<html>"), "text/plain; charset=utf-8");
        assert_eq!(
            content_type(Some("x.unknown"), b"\0\x01\x02"),
            "application/octet-stream"
        );
        assert_eq!(
            content_type(None, "é".as_bytes()[..1].as_ref()),
            "text/plain; charset=utf-8"
        );
    }
}
