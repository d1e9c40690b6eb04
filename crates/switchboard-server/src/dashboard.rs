//! The dashboard: a web page of the live service map, served at `/dashboard/` from files
//! embedded in the binary (`crates/switchboard-server/dashboard/`, see its README): no CDN,
//! no build step, works offline. The page reads the same APIs as any client (`/v1/graph`,
//! `/v1/topics`, …) with the token its user types in, so serving it needs no permission.

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// Every file of the page: its path under `/dashboard/`, content type and bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../dashboard/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../dashboard/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../dashboard/style.css")),
    (
        "vendor/cytoscape.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/vendor/cytoscape.min.js"),
    ),
    (
        "vendor/cytoscape-dagre.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/vendor/cytoscape-dagre.min.js"),
    ),
];

/// Scripts, styles and data come from this server only; the page is never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

fn asset(path: &str) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Embedded in the binary: a new server version may bring new files.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => ApiError::NotFound(format!("no dashboard file {path:?}")).into_response(),
    }
}

/// `/` and `/dashboard` lead to `/dashboard/`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(|| async { asset("index.html") }))
        .route("/dashboard/{*path}", get(|Path(path): Path<String>| async move { asset(&path) }))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn every_file_the_page_names_is_embedded() {
        let index = std::str::from_utf8(ASSETS[0].2).expect("utf-8");
        for reference in index.split(['"', '\'']).filter(|s| s.ends_with(".js") || s.ends_with(".css")) {
            let path = reference.trim_start_matches("./").trim_start_matches("/dashboard/");
            assert!(ASSETS.iter().any(|(p, _, _)| *p == path), "{reference} is not embedded");
        }
        assert_eq!(asset("nope.js").status(), StatusCode::NOT_FOUND);
    }
}
