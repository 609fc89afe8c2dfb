//! `GET /assets/*` — the front-end files from `--assets-dir`. Only plain relative paths to
//! files of known types inside the directory; dot-files, `node_modules` and anything that
//! resolves outside (`..`, symlinks) are 404.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::server::App;

fn content_type(path: &std::path::Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "js" | "mjs" => Some("text/javascript; charset=utf-8"),
        "css" => Some("text/css; charset=utf-8"),
        "html" => Some("text/html; charset=utf-8"),
        "json" | "map" => Some("application/json"),
        "svg" => Some("image/svg+xml"),
        "png" => Some("image/png"),
        _ => None,
    }
}

/// `a/b.js` → Some; `../x`, `.git/config`, `a//b`, `node_modules/x.js` → None.
pub fn safe_relative(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for seg in p.split('/') {
        if seg.is_empty()
            || seg.starts_with('.')
            || seg == "node_modules"
            || seg.contains(['\\', '\0', ':'])
        {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

pub async fn serve(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    let Some(root) = app.config.assets_dir.as_ref() else {
        return not_found();
    };
    let Some(rel) = safe_relative(&path) else {
        return not_found();
    };
    let Some(ct) = content_type(&rel) else {
        return not_found();
    };
    let (Ok(root), Ok(full)) = (
        tokio::fs::canonicalize(root).await,
        tokio::fs::canonicalize(root.join(&rel)).await,
    ) else {
        return not_found();
    };
    if !full.starts_with(&root) {
        return not_found();
    }
    match tokio::fs::read(&full).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, ct),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths() {
        assert!(safe_relative("whatsapp-connect.js").is_some());
        assert!(safe_relative("test/fake-fb-sdk.js").is_some());
        for bad in [
            "../Cargo.toml",
            "a/../../x.js",
            ".gitignore",
            "a//b.js",
            "node_modules/x/index.js",
            "/etc/passwd",
            "a\\..\\b.js",
        ] {
            assert!(safe_relative(bad).is_none(), "{bad}");
        }
    }
}
