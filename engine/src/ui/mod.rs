//! The driver's web UI: live pages with plots, a JSON API under `/api/v1/` and Prometheus
//! metrics at `/metrics`, served by axum on the driver's runtime.
//!
//! [`Ui`] is a [`Reporter`]: it learns everything from the driver's events (the same ones the
//! terminal and `--events` see), so the driver knows nothing of it. `sluice ui --checkpoint`
//! feeds it a stopped query's progress records instead (history). It is read-only: every route
//! is a `GET`. It binds loopback by default; any other address needs a token
//! ([`UiOptions::token`]), checked on every request (`Authorization: Bearer TOKEN` or
//! `?token=TOKEN`).

pub mod metrics;
pub mod model;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::driver::events::{Event, Reporter};
use crate::driver::EpochProgress;
use crate::error::{EngineError, Result};
use metrics::Metrics;
use model::Model;

/// The default address: Spark's UI port.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4040);
/// Ports tried after a taken default one.
const PORT_TRIES: u16 = 100;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The address to bind; with the default one, the next free port is taken if it is busy.
    pub addr: SocketAddr,
    /// The token every request must carry; required for a non-loopback address.
    pub token: Option<String>,
}

/// The UI's model and metrics, fed by the driver's events.
pub struct Ui {
    model: Mutex<Model>,
    metrics: Metrics,
}

impl Ui {
    /// A UI for a running driver.
    pub fn live() -> Arc<Ui> {
        Arc::new(Ui {
            model: Mutex::new(Model::new("live")),
            metrics: Metrics::new(),
        })
    }

    /// A UI for a stopped query: its checkpoint's progress records, oldest first, and its
    /// stage DAG when the checkpoint keeps the job.
    pub fn history(
        query_id: String,
        records: Vec<EpochProgress>,
        stages: Vec<crate::driver::events::StageInfo>,
    ) -> Arc<Ui> {
        let mut model = Model::new("history");
        model.state = "stopped".into();
        model.query_id = Some(query_id);
        model.stages = stages;
        let metrics = Metrics::new();
        for p in records {
            metrics.epoch(&p);
            model.add_epoch(p);
        }
        Arc::new(Ui {
            model: Mutex::new(model),
            metrics,
        })
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the query finished (`Ok`) or failed, once its run has ended.
    pub fn finished(&self, ok: bool) {
        self.model().state = if ok { "finished" } else { "failed" }.into();
    }

    /// The OpenMetrics text of `/metrics`. (Rendered under the model's lock, which every
    /// update holds: a scrape never sees half an epoch.)
    pub fn metrics_text(&self) -> String {
        let _model = self.model();
        self.metrics.render()
    }
}

impl Reporter for Ui {
    fn report(&self, event: Event) {
        let mut model = self.model();
        match &event {
            Event::EpochCommitted { progress, .. } => self.metrics.epoch(progress),
            Event::Executors { executors } => self.metrics.executors(executors),
            _ => {}
        }
        model.apply(&event, now_ms());
    }
}

/// Several reporters in one (the terminal and the UI).
pub struct Tee(pub Vec<Arc<dyn Reporter>>);

impl Reporter for Tee {
    fn report(&self, event: Event) {
        if let Some((last, rest)) = self.0.split_last() {
            for r in rest {
                r.report(event.clone());
            }
            last.report(event);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Binds the UI's address (the next free port after a busy default one) and serves `ui` on
/// the current tokio runtime until the process ends. Returns the address bound.
pub async fn serve(ui: Arc<Ui>, options: UiOptions) -> Result<SocketAddr> {
    if !options.addr.ip().is_loopback() && options.token.as_deref().is_none_or(str::is_empty) {
        return Err(EngineError::Config(format!(
            "the UI at {} would be reachable from other hosts: give it a token (--ui-token or SLUICE_UI_TOKEN), or bind a loopback address",
            options.addr
        )));
    }
    let listener = bind(options.addr).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| EngineError::Config(format!("the UI's address: {e}")))?;
    let token: Option<Arc<str>> = options
        .token
        .filter(|t| !t.is_empty())
        .map(|t| Arc::from(t.as_str()));
    let app = router(ui).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let token = token.clone();
            async move {
                match token {
                    Some(t) if !authorized(&req, &t) => (
                        StatusCode::UNAUTHORIZED,
                        "this UI needs its token: ?token=TOKEN or Authorization: Bearer TOKEN\n",
                    )
                        .into_response(),
                    _ => next.run(req).await,
                }
            }
        },
    ));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the UI stopped: {e}");
        }
    });
    Ok(addr)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let tries = if addr == DEFAULT_ADDR { PORT_TRIES } else { 1 };
    let mut last = None;
    for i in 0..tries {
        let at = SocketAddr::new(addr.ip(), addr.port().saturating_add(i));
        match tokio::net::TcpListener::bind(at).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(EngineError::Config(format!(
        "cannot serve the UI at {addr}{}: {}",
        if tries > 1 {
            format!(" (nor the next {} ports)", tries - 1)
        } else {
            String::new()
        },
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Whether `req` carries `token` (compared in constant time).
fn authorized(req: &Request, token: &str) -> bool {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v)
    });
    let same = |given: &str| {
        let (a, b) = (given.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    };
    bearer.is_some_and(same) || query.is_some_and(same)
}

fn router(ui: Arc<Ui>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/epochs", get(page))
        .route("/epochs/{n}", get(page))
        .route("/stages", get(page))
        .route("/executors", get(page))
        .route("/static/{file}", get(asset))
        .route("/api/v1/query", get(api_query))
        .route("/api/v1/epochs", get(api_epochs))
        .route("/api/v1/epochs/{n}", get(api_epoch))
        .route("/api/v1/stages", get(api_stages))
        .route("/api/v1/executors", get(api_executors))
        .route("/metrics", get(api_metrics))
        .with_state(ui)
}

const INDEX: &str = include_str!("assets/index.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&str, &str) = match file.as_str() {
        "app.js" => (include_str!("assets/app.js"), "text/javascript"),
        "app.css" => (include_str!("assets/app.css"), "text/css"),
        "uPlot.iife.min.js" => (include_str!("assets/uPlot.iife.min.js"), "text/javascript"),
        "uPlot.min.css" => (include_str!("assets/uPlot.min.css"), "text/css"),
        "uPlot.LICENSE" => (include_str!("assets/uPlot.LICENSE"), "text/plain"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("{kind}; charset=utf-8").parse() {
        headers.insert(header::CONTENT_TYPE, v);
    }
    (headers, body).into_response()
}

async fn api_query(State(ui): State<Arc<Ui>>) -> Json<serde_json::Value> {
    Json(ui.model().query(now_ms()))
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn api_epochs(State(ui): State<Arc<Ui>>, Query(q): Query<Since>) -> Response {
    let model = ui.model();
    Json(model.epochs(q.since)).into_response()
}

async fn api_epoch(State(ui): State<Arc<Ui>>, Path(n): Path<u64>) -> Response {
    let model = ui.model();
    match model.epoch(n) {
        Some(p) => Json(p).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("epoch {n} is not among the kept records\n"),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct OfEpoch {
    epoch: Option<u64>,
}

async fn api_stages(
    State(ui): State<Arc<Ui>>,
    Query(q): Query<OfEpoch>,
) -> Json<serde_json::Value> {
    Json(ui.model().stages(q.epoch))
}

async fn api_executors(State(ui): State<Arc<Ui>>) -> Json<serde_json::Value> {
    Json(ui.model().executors(now_ms()))
}

async fn api_metrics(State(ui): State<Arc<Ui>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ui.metrics_text(),
    )
        .into_response()
}
