//! The command line's human tables: pure functions from the admin API's
//! JSON to text, so they are tested without a proxy.
//!
//! Fields the proxy may not give (a verdict, a rollout, a baseline) are
//! shown when present and left out when absent, so one client reads every
//! version of the API.

use std::fmt::Write;

use serde_json::Value;

/// A split object as `blue 90 · canary 10`.
pub fn split(split: &Value) -> String {
    match split.as_object() {
        Some(map) if !map.is_empty() => {
            map.iter().map(|(pool, w)| format!("{pool} {}", scalar(w))).collect::<Vec<_>>().join(" · ")
        }
        _ => "–".to_string(),
    }
}

/// A JSON value as short text: strings bare, objects as `k v, …`.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "–".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Object(o) => o.iter().map(|(k, v)| format!("{k} {}", scalar(v))).collect::<Vec<_>>().join(", "),
    }
}

/// A verdict given as a string or as `{kind|verdict, reason}`.
fn verdict(v: Option<&Value>) -> Option<(String, Option<String>)> {
    let v = v?;
    match v {
        Value::String(s) => Some((s.clone(), None)),
        Value::Object(o) => {
            let kind = o.get("kind").or_else(|| o.get("verdict")).and_then(Value::as_str).unwrap_or("unknown");
            Some((kind.to_string(), o.get("reason").and_then(Value::as_str).map(str::to_string)))
        }
        _ => None,
    }
}

/// Rows as aligned columns, two spaces apart; widths in characters.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The fleet block of `/status` in one line: this replica, the leader, the
/// connection, the replicas alive and those on another config.
fn fleet_line(fleet: &Value) -> String {
    let leader = fleet.get("leader").filter(|l| l.is_string()).map_or("none".to_string(), scalar);
    let connection = if fleet["connected"] == true {
        "connected".to_string()
    } else {
        format!("ETCD UNREACHABLE (fail static, {} pending)", fleet["pending_writes"].as_u64().unwrap_or(0))
    };
    let alive = fleet["replicas"].as_array().map_or(0, Vec::len);
    let mut line =
        format!("fleet: replica {} · leader {leader} · {connection} · {alive} alive", scalar(&fleet["replica"]));
    let different: Vec<String> = fleet["different_config"].as_array().into_iter().flatten().map(scalar).collect();
    if !different.is_empty() {
        line.push_str(&format!(" · other config: {}", different.join(", ")));
    }
    line
}

/// The `/status` answer (and `/rollouts`, when given) as tables.
pub fn status(status: &Value, rollouts: Option<&Value>) -> String {
    let mut out = String::new();
    let revision = status.get("revision").map_or("–".to_string(), scalar);
    let reload = match status.get("last_reload") {
        Some(r) if r.get("ok").and_then(Value::as_bool) == Some(false) => {
            format!("FAILED {}", r.get("error").map_or(String::new(), scalar))
        }
        Some(r) if r.is_object() => format!("ok {}", r.get("time").map_or(String::new(), scalar)),
        _ => "none".to_string(),
    };
    let _ = writeln!(out, "revision {revision}   last reload: {reload}");
    if let Some(fleet) = status.get("fleet").filter(|f| f.is_object()) {
        let _ = writeln!(out, "{}", fleet_line(fleet));
    }
    out.push('\n');

    let pools = status.get("pools").and_then(Value::as_array).cloned().unwrap_or_default();
    let tripped = |name: &str| pools.iter().any(|p| p["name"] == name && !p["tripped"].is_null());
    let mut rows = vec![vec!["ROUTE".into(), "EFFECTIVE".into(), "CONFIGURED".into(), "NOTE".into()]];
    for r in status.get("routes").and_then(Value::as_array).into_iter().flatten() {
        let mut notes = Vec::new();
        if !r["override"].is_null() {
            notes.push("override".to_string());
        }
        if let Some(map) = r["effective"].as_object() {
            notes.extend(map.keys().filter(|p| tripped(p)).map(|p| format!("{p} tripped")));
        }
        rows.push(vec![scalar(&r["name"]), split(&r["effective"]), split(&r["configured"]), notes.join(", ")]);
    }
    out.push_str(&table(&rows));

    let mut rows = vec![vec![
        "POOL".into(),
        "STATE".into(),
        "VERDICT".into(),
        "WINDOW".into(),
        "ERRORS".into(),
        "P99".into(),
        "BACKENDS".into(),
    ]];
    let mut reasons = Vec::new();
    for p in &pools {
        let name = scalar(&p["name"]);
        let state = match p["tripped"].get("reason") {
            Some(reason) => format!("TRIPPED ({})", scalar(reason)),
            None => "serving".to_string(),
        };
        if let Some(detail) = p["tripped"].get("detail").and_then(Value::as_str) {
            reasons.push(format!("{name} tripped: {detail}"));
        }
        let guard = &p["guard"];
        let verdict = verdict(guard.get("verdict"));
        if let Some((_, Some(reason))) = &verdict {
            reasons.push(format!("{name} verdict: {reason}"));
        }
        let mut verdict = verdict.map_or("–".to_string(), |(kind, _)| kind);
        if let Some(base) = guard.get("baseline").and_then(Value::as_str) {
            verdict.push_str(&format!(" vs {base}"));
        }
        let (window, errors, p99) = if guard.is_object() {
            (
                format!("{} req", guard["requests"].as_u64().unwrap_or(0)),
                guard["error_rate"].as_f64().map_or("–".into(), |r| format!("{:.2}%", r * 100.0)),
                guard["p99_ms"].as_f64().map_or("–".into(), |ms| format!("{ms:.1} ms")),
            )
        } else {
            ("no guard".into(), "–".into(), "–".into())
        };
        let backends = p["backends"].as_array().cloned().unwrap_or_default();
        let serving = backends.iter().filter(|b| b["healthy"] == true && b["draining"] != true).count();
        let draining = backends.iter().filter(|b| b["draining"] == true).count();
        let in_flight: u64 = backends.iter().filter_map(|b| b["in_flight"].as_u64()).sum();
        let mut b = format!("{serving}/{} healthy, {in_flight} in flight", backends.len());
        if draining > 0 {
            b.push_str(&format!(", {draining} draining"));
        }
        rows.push(vec![name, state, verdict, window, errors, p99, b]);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    for reason in reasons {
        let _ = writeln!(out, "  {reason}");
    }

    if let Some(rollouts) = rollouts {
        let list: Vec<Value> = match rollouts {
            Value::Array(a) => a.clone(),
            Value::Object(o) => match o.get("rollouts").and_then(Value::as_array) {
                Some(a) => a.clone(),
                None => o
                    .iter()
                    .map(|(route, v)| {
                        let mut v = v.clone();
                        if let Some(obj) = v.as_object_mut() {
                            obj.entry("route").or_insert(Value::String(route.clone()));
                        }
                        v
                    })
                    .collect(),
            },
            _ => Vec::new(),
        };
        let mut rows = vec![vec![
            "ROLLOUT".into(),
            "STATE".into(),
            "STEP".into(),
            "SHARE".into(),
            "HOLD LEFT".into(),
            "VERDICT".into(),
        ]];
        for r in &list {
            let route = r.get("route").or_else(|| r.get("name")).map_or("–".into(), scalar);
            let state = match &r["state"] {
                Value::Object(o) => o.get("name").map_or_else(|| scalar(&r["state"]), scalar),
                other => scalar(other),
            };
            let step = match (r["step"].as_u64(), r.get("steps")) {
                (Some(i), Some(Value::Array(steps))) => format!("{}/{}", i + 1, steps.len()),
                (Some(i), Some(Value::Number(n))) => format!("{}/{n}", i + 1),
                (Some(i), _) => format!("{}", i + 1),
                _ => "–".into(),
            };
            let share =
                r.get("weight").or_else(|| r.get("canary_share")).map_or("–".into(), |v| format!("{}%", scalar(v)));
            let hold = match (r.get("hold_left_ms").and_then(Value::as_u64), r.get("hold_left")) {
                (Some(ms), _) => format!("{}s", ms.div_ceil(1000)),
                (None, Some(v)) => scalar(v),
                _ => "–".into(),
            };
            let verdict = verdict(r.get("verdict")).map_or("–".into(), |(kind, _)| kind);
            rows.push(vec![route, state, step, share, hold, verdict]);
        }
        out.push('\n');
        if list.is_empty() {
            out.push_str("no rollouts\n");
        } else {
            out.push_str(&table(&rows));
        }
    }
    out
}

/// The `/history` answer, newest first, at most `limit` revisions.
pub fn history(history: &Value, limit: usize) -> String {
    let mut rows = vec![vec!["REV".into(), "TIME".into(), "CAUSE".into(), "SPLITS".into()]];
    for rev in history.as_array().into_iter().flatten().take(limit) {
        let splits = rev["splits"]
            .as_object()
            .map(|m| m.iter().map(|(route, s)| format!("{route}: {}", split(s))).collect::<Vec<_>>().join("; "))
            .unwrap_or_default();
        rows.push(vec![scalar(&rev["revision"]), scalar(&rev["time"]), scalar(&rev["cause"]), splits]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "revision": 7,
            "last_reload": {"ok": true, "time": "2026-11-26T10:00:00Z", "error": null},
            "routes": [{"name": "shop", "configured": {"blue": 90, "canary": 10},
                        "effective": {"blue": 100, "canary": 0}, "override": null}],
            "pools": [
                {"name": "blue", "tripped": null, "guard": null,
                 "backends": [{"address": "127.0.0.1:9001", "healthy": true, "draining": false, "in_flight": 2}]},
                {"name": "canary",
                 "tripped": {"reason": "error_rate", "detail": "error rate 0.31 > 0.01 over 30s, n=212", "revision": 7},
                 "guard": {"requests": 212, "failures": 66, "error_rate": 0.3113, "p99_ms": 12.5,
                           "verdict": {"kind": "failing", "reason": "canary failing: 4.8% of 310 vs stable 0.1%"},
                           "baseline": "blue"},
                 "backends": [{"address": "127.0.0.1:9003", "healthy": true, "draining": false, "in_flight": 0},
                              {"address": "127.0.0.1:9004", "healthy": false, "draining": true, "in_flight": 1}]}
            ]
        })
    }

    #[test]
    fn status_shows_splits_trips_verdicts_and_backends() {
        let text = status(&sample(), None);
        assert!(text.starts_with("revision 7   last reload: ok 2026-11-26T10:00:00Z\n"), "{text}");
        let route = text.lines().find(|l| l.starts_with("shop")).unwrap();
        assert!(route.contains("blue 100 · canary 0") && route.contains("blue 90 · canary 10"), "{route}");
        assert!(route.ends_with("canary tripped"), "{route}");
        let canary = text.lines().find(|l| l.starts_with("canary")).unwrap();
        for part in
            ["TRIPPED (error_rate)", "failing vs blue", "212 req", "31.13%", "12.5 ms", "1/2 healthy", "1 draining"]
        {
            assert!(canary.contains(part), "{part} missing: {canary}");
        }
        assert!(text.contains("  canary tripped: error rate 0.31 > 0.01 over 30s, n=212"));
        assert!(text.contains("  canary verdict: canary failing: 4.8% of 310 vs stable 0.1%"));
        let blue = text.lines().find(|l| l.starts_with("blue")).unwrap();
        assert!(blue.contains("no guard") && blue.contains("2 in flight"), "{blue}");
        assert!(!text.contains("ROLLOUT"), "no rollout table without /rollouts");
    }

    #[test]
    fn columns_line_up() {
        let text = status(&sample(), None);
        let header = text.lines().find(|l| l.starts_with("POOL")).unwrap();
        let col = header.find("VERDICT").unwrap();
        let canary = text.lines().find(|l| l.starts_with("canary")).unwrap();
        assert_eq!(canary.chars().skip(col).take(7).collect::<String>(), "failing");
    }

    #[test]
    fn the_fleet_shows_in_one_line() {
        assert!(!status(&sample(), None).contains("fleet:"), "no fleet line without fleet mode");
        let mut s = sample();
        s["fleet"] = json!({"replica": "edge-2", "leader": "edge-1", "connected": true, "pending_writes": 0,
                            "replicas": [{"name": "edge-1"}, {"name": "edge-2"}], "different_config": ["edge-1"]});
        let text = status(&s, None);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line, "fleet: replica edge-2 · leader edge-1 · connected · 2 alive · other config: edge-1");
        s["fleet"]["connected"] = json!(false);
        s["fleet"]["pending_writes"] = json!(1);
        assert!(status(&s, None).contains("ETCD UNREACHABLE (fail static, 1 pending)"));
    }

    #[test]
    fn a_failed_reload_is_loud() {
        let mut s = sample();
        s["last_reload"] = json!({"ok": false, "time": "t", "error": "cutover.toml:3:1: unknown pool"});
        assert!(status(&s, None).starts_with("revision 7   last reload: FAILED cutover.toml:3:1: unknown pool"));
    }

    #[test]
    fn rollouts_show_in_any_of_the_shapes() {
        let list = json!([{"route": "shop", "state": "progressing", "step": 1, "steps": [10, 25, 50],
                           "weight": 25, "hold_left_ms": 4200, "verdict": "healthy"}]);
        let text = status(&sample(), Some(&list));
        let row = text.lines().find(|l| l.starts_with("shop") && l.contains("progressing")).unwrap();
        for part in ["2/3", "25%", "5s", "healthy"] {
            assert!(row.contains(part), "{part}: {row}");
        }
        let map = json!({"shop": {"state": {"name": "paused"}, "step": 0}});
        assert!(status(&sample(), Some(&map)).lines().any(|l| l.starts_with("shop") && l.contains("paused")));
        assert!(status(&sample(), Some(&json!([]))).contains("no rollouts"));
    }

    #[test]
    fn history_lists_newest_first_up_to_the_limit() {
        let h = json!([
            {"revision": 8, "time": "2026-11-26T10:05:00Z", "cause": "admin: switchback shop", "splits": {"shop": {"blue": 100}}},
            {"revision": 7, "time": "2026-11-26T10:04:12Z", "cause": "guard: pool canary", "splits": {"shop": {"blue": 90}}}
        ]);
        let text = history(&h, 1);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("8    2026-11-26T10:05:00Z  admin: switchback shop  shop: blue 100"));
    }
}
