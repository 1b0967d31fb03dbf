//! The demo page (`--demo`, on by default): FilePond and Uppy uploading to
//! this server. Every file of it is in the binary (the two packages are
//! vendored with their licences in assets/demo/vendor/), so the page works
//! with no internet access and loads nothing from elsewhere.

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};

/// A file of the page: its path under `/demo/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media_type:literal) => {
        Asset {
            path: $path,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../../assets/demo/", $path)),
        }
    };
}

const ASSETS: [Asset; 9] = [
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("demo.js", "text/javascript; charset=utf-8"),
    asset!("demo.css", "text/css; charset=utf-8"),
    asset!("vendor/filepond.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/filepond.min.css", "text/css; charset=utf-8"),
    asset!("vendor/uppy.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor/uppy.min.css", "text/css; charset=utf-8"),
    asset!("vendor/LICENSE-filepond", "text/plain; charset=utf-8"),
    asset!("vendor/LICENSE-uppy", "text/plain; charset=utf-8"),
];

/// Scripts and styles from this server only; inline styles, which both
/// widgets set, and previews of picked files as blob: and data: images.
const POLICY: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' blob: data:; object-src 'none'; base-uri 'none'";

async fn asset(req: HttpRequest) -> HttpResponse {
    let path = req.match_info().get("path").unwrap_or("");
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == path) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("Not found");
    };
    HttpResponse::Ok()
        .content_type(asset.media_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(asset.bytes)
}

async fn to_the_page() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/demo/"))
        .finish()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    for path in ["/", "/demo"] {
        cfg.service(
            web::resource(path)
                .route(web::get().to(to_the_page))
                .route(web::head().to(to_the_page)),
        );
    }
    cfg.service(
        web::resource("/demo/{path:.*}")
            .route(web::get().to(asset))
            .route(web::head().to(asset)),
    );
}
