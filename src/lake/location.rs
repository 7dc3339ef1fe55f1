//! Lake URLs → a plain description of where the lake is, without I/O (validate, then build).

use super::LakeError;
use std::path::{Path as FsPath, PathBuf};

/// Where the lake lives, decided from the URL alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A local folder, already made absolute.
    Local(PathBuf),
    Memory,
    /// A cloud store; `url` is handed to the object_store builder, `prefix` is the path inside.
    Cloud {
        kind: CloudKind,
        url: url::Url,
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloudKind {
    S3,
    Gcs,
    Azure,
}

/// Parses a lake URL: `file://./lake`, `file:///abs`, a bare path, `memory://`, `s3://`, `gs://`,
/// `az://` (and the other Azure spellings object_store knows). Relative paths resolve against
/// `base_dir`.
pub(crate) fn parse(raw: &str, base_dir: &FsPath) -> Result<Location, LakeError> {
    let bad = |reason: &str| LakeError::BadUrl {
        url: redact(raw),
        reason: reason.to_string(),
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(bad("the lake URL is empty"));
    }
    let Some((scheme, rest)) = raw.split_once("://") else {
        // A bare path (no scheme).
        return Ok(Location::Local(absolute(FsPath::new(raw), base_dir)));
    };
    match scheme.to_ascii_lowercase().as_str() {
        // `file://./lake` is not a valid RFC 8089 URL but is the documented default; take
        // everything after `file://` as a path (`file:///abs` gives `/abs`).
        "file" => {
            if rest.is_empty() {
                return Err(bad("file:// needs a path, e.g. file://./lake"));
            }
            if rest.contains(['?', '#']) {
                return Err(bad("a file:// lake takes no query or fragment"));
            }
            Ok(Location::Local(absolute(FsPath::new(rest), base_dir)))
        }
        "memory" => Ok(Location::Memory),
        s @ ("s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss") => {
            let kind = match s {
                "s3" | "s3a" => CloudKind::S3,
                "gs" => CloudKind::Gcs,
                _ => CloudKind::Azure,
            };
            let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(bad(
                    "the URL needs a bucket or container, e.g. s3://bucket/prefix",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(bad(
                    "put store settings in [lake] options, not in the URL query",
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad(
                    "credentials do not belong in the lake URL; use the environment or options",
                ));
            }
            let prefix = url.path().trim_matches('/').to_string();
            Ok(Location::Cloud { kind, url, prefix })
        }
        other => Err(bad(&format!(
            "unsupported scheme {other:?}; use file://, s3://, gs://, az:// or memory://"
        ))),
    }
}

fn absolute(p: &FsPath, base_dir: &FsPath) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    // Drop `.` segments so the displayed path is clean; `..` is kept (symlinks make it unsafe to
    // fold without touching the disk).
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// The URL with any userinfo, query and fragment removed, safe to log.
pub(crate) fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        // Not a URL with an authority (a bare path, `file://./x`): strip anything after `?`/`#`
        // and anything up to an `@` in the authority, the only places a secret could hide.
        _ => {
            let cut = raw.find(['?', '#']).unwrap_or(raw.len());
            let s = &raw[..cut];
            match s.split_once("://") {
                Some((scheme, rest)) => {
                    let authority_end = rest.find('/').unwrap_or(rest.len());
                    match rest[..authority_end].rfind('@') {
                        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                        None => s.to_string(),
                    }
                }
                None => s.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_forms_resolve_against_base_dir() {
        let base = FsPath::new("/srv/hw");
        assert_eq!(
            parse("file://./lake", base).unwrap(),
            Location::Local("/srv/hw/lake".into())
        );
        assert_eq!(
            parse("lake/sub", base).unwrap(),
            Location::Local("/srv/hw/lake/sub".into())
        );
        assert_eq!(
            parse("file:///data/lake", base).unwrap(),
            Location::Local("/data/lake".into())
        );
        assert_eq!(
            parse("/data/lake", base).unwrap(),
            Location::Local("/data/lake".into())
        );
        assert_eq!(parse("memory://", base).unwrap(), Location::Memory);
    }

    #[test]
    fn cloud_urls_keep_bucket_and_prefix() {
        let base = FsPath::new("/");
        match parse("s3://bucket/a/b/", base).unwrap() {
            Location::Cloud { kind, url, prefix } => {
                assert_eq!(kind, CloudKind::S3);
                assert_eq!(url.host_str(), Some("bucket"));
                assert_eq!(prefix, "a/b");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("gs://b", base).unwrap(),
            Location::Cloud { kind: CloudKind::Gcs, ref prefix, .. } if prefix.is_empty()
        ));
        assert!(matches!(
            parse("az://container/p", base).unwrap(),
            Location::Cloud {
                kind: CloudKind::Azure,
                ..
            }
        ));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_secrets() {
        let base = FsPath::new("/");
        for bad in [
            "",
            "ftp://host/x",
            "s3://",
            "s3://key:secret@bucket/p",
            "s3://bucket/p?secret=1",
            "file://",
        ] {
            let err = parse(bad, base).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, LakeError::BadUrl { .. }), "{bad}: {text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn redact_removes_userinfo_and_query() {
        assert_eq!(redact("s3://k:s@bucket/p?x=1"), "s3://bucket/p");
        assert_eq!(redact("file://./lake?token=x"), "file://./lake");
        assert_eq!(redact("weird://user:pw@host"), "weird://host");
    }
}
