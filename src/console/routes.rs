//! The console's HTTP answers: the page and its assets, and `/series`.
//!
//! The admin listener asks [`serve`] first; `None` means the path is not
//! the console's and the admin API answers as before. Everything here is a
//! read, so no token applies — as for every `GET` of the admin API.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::Full;

use super::series::SharedSeries;

/// The answer for `method` and `uri` when they are the console's: `/ui`
/// (and `/ui/`), `/ui/app.js`, `/ui/app.css`, and `/series?since=<unix
/// seconds>` from `series`. Any other path: `None`.
pub fn serve(method: &Method, uri: &Uri, series: &SharedSeries) -> Option<Response<Full<Bytes>>> {
    let path = uri.path();
    let asset = match path {
        "/ui" | "/ui/" => Some((super::PAGE, "text/html; charset=utf-8")),
        "/ui/app.js" => Some((super::SCRIPT, "text/javascript; charset=utf-8")),
        "/ui/app.css" => Some((super::STYLE, "text/css; charset=utf-8")),
        _ => None,
    };
    if asset.is_none() && path != "/series" {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(respond(StatusCode::METHOD_NOT_ALLOWED, "application/json", error_body("method not allowed")));
    }
    if let Some((body, content_type)) = asset {
        return Some(respond(StatusCode::OK, content_type, Bytes::from_static(body.as_bytes())));
    }
    let since = match query_since(uri.query()) {
        Ok(since) => since,
        Err(msg) => return Some(respond(StatusCode::BAD_REQUEST, "application/json", error_body(&msg))),
    };
    let view = match series.lock() {
        Ok(series) => series.since(since),
        Err(_) => {
            return Some(respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                error_body("series unavailable"),
            ))
        }
    };
    let body = serde_json::to_vec(&view).unwrap_or_default();
    Some(respond(StatusCode::OK, "application/json", Bytes::from(body)))
}

/// `since` from the query string: unix seconds, 0 (everything) when absent.
fn query_since(query: Option<&str>) -> Result<u64, String> {
    let Some(query) = query else { return Ok(0) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            return value.parse().map_err(|_| format!("since must be a unix time in whole seconds, not {value:?}"));
        }
    }
    Ok(0)
}

fn error_body(message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": message }).to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(super::CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::series::{PoolTotals, Series};

    fn get(path: &str, series: &SharedSeries) -> Option<Response<Full<Bytes>>> {
        serve(&Method::GET, &path.parse().unwrap(), series)
    }

    #[test]
    fn the_page_and_assets_carry_their_type_and_the_policy() {
        let series = Series::shared();
        for (path, kind) in [
            ("/ui", "text/html"),
            ("/ui/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let r = get(path, &series).unwrap_or_else(|| panic!("{path} not served"));
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
            assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], crate::console::CONTENT_SECURITY_POLICY);
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[test]
    fn other_paths_are_not_the_console_s_and_writes_are_refused() {
        let series = Series::shared();
        for path in ["/status", "/uix", "/ui/other.js", "/", "/seriesx"] {
            assert!(get(path, &series).is_none(), "{path}");
        }
        let r = serve(&Method::POST, &"/ui".parse().unwrap(), &series).unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn series_answers_the_points_after_since_and_refuses_a_bad_since() {
        let series = Series::shared();
        {
            let mut s = series.lock().unwrap();
            for (t, n) in [(100, 0), (101, 5), (102, 9)] {
                let totals = PoolTotals { requests: n, ..PoolTotals::default() };
                s.record_second(t, [("canary", &totals)]);
            }
        }
        let body = |r: Response<Full<Bytes>>| {
            use http_body_util::BodyExt;
            let bytes = futures_executor_block(r.into_body().collect()).map(|c| c.to_bytes()).unwrap_or_default();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let all = body(get("/series", &series).unwrap());
        assert_eq!(all["pools"]["canary"].as_array().unwrap().len(), 2);
        let recent = body(get("/series?since=101", &series).unwrap());
        assert_eq!(recent["pools"]["canary"][0]["requests"], 4);
        assert_eq!(recent["now"], 102);
        let bad = get("/series?since=yesterday", &series).unwrap();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    /// `Full`'s body is ready at once; a current-thread runtime collects it.
    fn futures_executor_block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
