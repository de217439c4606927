//! The operator console: one page served by the admin listener (`GET /ui`)
//! and the per-second figures its charts draw (`GET /series`).
//!
//! The page is three files embedded in the binary — markup, script and
//! style — so it works on an air-gapped host and needs no build step. The
//! script and the style are separate assets rather than inline so that the
//! page can be served under a `Content-Security-Policy` that allows no inline
//! script at all: an injected `<script>` or `onclick` never runs, and the
//! page can reach nothing but its own origin. The page reads the same JSON
//! as everyone else (`/status`, `/history`, `/rollouts`, `/series`) and
//! writes through the same admin calls, under the same token rules.
//!
//! - [`series`]: the bounded ring of per-second figures, and its sampler;
//! - [`routes`]: the responses for `/ui`, its assets and `/series`.

pub mod routes;
pub mod series;

/// The page's markup (`GET /ui`).
pub const PAGE: &str = include_str!("ui.html");

/// The page's script (`GET /ui/app.js`).
pub const SCRIPT: &str = include_str!("ui.js");

/// The page's style (`GET /ui/app.css`).
pub const STYLE: &str = include_str!("ui.css");

/// The policy every console response carries: only the page's own script
/// and style, connections only to its own origin, no framing, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
