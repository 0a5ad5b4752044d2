use std::collections::BTreeMap;

use super::*;

fn name(url: &str, project: Option<&str>) -> Option<String> {
    ApiName::new(url, project).map(|n| n.to_string())
}

#[test]
fn names_follow_the_sdks_examples() {
    // The examples of `Proxy._extract_name`'s docstring.
    assert_eq!(name("/servers", None).as_deref(), Some("servers"));
    assert_eq!(name("/servers/1234", None).as_deref(), Some("server"));
    assert_eq!(
        name("/servers/1234/os-security-groups", None).as_deref(),
        Some("server_os-security-groups")
    );
    assert_eq!(
        name("/v2.0/networks.json", None).as_deref(),
        Some("networks")
    );
    // Full URLs, queries and the project id.
    assert_eq!(
        name("http://h:1/compute/v2.1/servers/detail?limit=200", None).as_deref(),
        Some("servers_detail")
    );
    assert_eq!(
        name("https://h/v2.1/p1/servers/abc", Some("p1")).as_deref(),
        Some("server")
    );
    assert_eq!(
        name("https://h/v1/AUTH_p1/container", Some("p1")).as_deref(),
        Some("container")
    );
    assert_eq!(
        name("http://h:1/network/v2.0/ports?status=DOWN", None).as_deref(),
        Some("network_ports")
    );
    assert_eq!(
        name("http://h:1/v2/images/x/file", None).as_deref(),
        Some("image_file")
    );
    assert_eq!(
        name("http://h:1/v3/auth/tokens", None).as_deref(),
        Some("tokens")
    );
    assert_eq!(name("http://h:1/", None).as_deref(), Some("discovery"));
    assert_eq!(name("http://h:1", None).as_deref(), Some("discovery"));
    // `is` is not made singular; a lone `s` before an id is dropped.
    assert_eq!(
        name("/os-availability-zone/x", None).as_deref(),
        Some("os-availability-zone")
    );
    assert_eq!(name("/this/x", None).as_deref(), Some("this"));
    assert_eq!(name("/s/x", None).as_deref(), Some(""));
    // Dots and colons of a part become underscores.
    assert_eq!(name("/a.b:c/x/y", None).as_deref(), Some("a_b_c_y"));
}

#[test]
fn where_the_sdk_raises_there_is_no_name() {
    assert_eq!(name("/p1", Some("p1")), None);
    assert_eq!(name("/v/servers", None), None);
    assert_eq!(name("http://h/v", None), None);
    // A version segment of two letters is kept.
    assert_eq!(name("/vx/servers", None).as_deref(), Some("vx"));
}

#[test]
fn url_paths_are_read_as_urlparse_reads_them() {
    assert_eq!(url_path("http://h:1/a/b?x=1#f"), "/a/b");
    assert_eq!(url_path("/networks?router:external=true"), "/networks");
    assert_eq!(url_path("/a/b;params"), "/a/b");
    assert_eq!(url_path("/a;x/b"), "/a;x/b");
    assert_eq!(url_path("https://h"), "");
}

#[test]
fn milliseconds_are_truncated_from_float_seconds_as_the_sdk_does() {
    assert_eq!(sdk_millis(Duration::from_millis(1001)), 1000);
    assert_eq!(sdk_millis(Duration::from_millis(1002)), 1002);
    assert_eq!(sdk_millis(Duration::from_micros(999_999)), 999);
    assert_eq!(sdk_millis(Duration::from_nanos(1_000_000_500)), 1000);
    assert_eq!(sdk_millis(Duration::ZERO), 0);
}

#[test]
fn a_call_gives_the_sdks_events_in_its_order() {
    let events = call_events(
        "openstack.api",
        "compute",
        "GET",
        "http://h/compute/v2.1/servers/detail",
        None,
        Some((200, Duration::from_millis(1500))),
    );
    let key = "openstack.api.compute.GET.servers_detail";
    assert_eq!(
        events,
        [
            ApiEvent::Timing(format!("{key}.200"), 1500),
            ApiEvent::Incr(format!("{key}.200")),
            ApiEvent::Incr(format!("{key}.over_1000")),
            ApiEvent::Incr(format!("{key}.attempted")),
        ]
    );
    let failed = call_events("p", "block-storage", "DELETE", "/volumes/x", None, None);
    assert_eq!(
        failed,
        [
            ApiEvent::Incr("p.block-storage.DELETE.volume.failed".into()),
            ApiEvent::Incr("p.block-storage.DELETE.volume.attempted".into()),
        ]
    );
}

#[test]
fn the_reporter_records_the_same_events_into_the_driver_metrics() {
    let sink = Arc::new(DriverMetrics::new());
    let reporter = ApiReporter::new(
        Arc::clone(&sink),
        ApiStatsd {
            target: "127.0.0.1:9".into(),
            prefix: "openstack.api".into(),
        },
    );
    reporter.answered(
        "network",
        "GET",
        "http://h/v2.0/ports",
        None,
        200,
        Duration::from_millis(5),
    );
    reporter.answered(
        "network",
        "GET",
        "http://h/v2.0/ports",
        None,
        200,
        Duration::from_millis(7),
    );
    reporter.failed("network", "DELETE", "/ports/x", None);
    let got: BTreeMap<String, MetricTotalsView> = sink
        .snapshot()
        .into_iter()
        .map(|s| {
            assert_eq!(s.target, "127.0.0.1:9");
            (s.name, (s.totals.count, s.totals.timings, s.totals.millis))
        })
        .collect();
    let want: BTreeMap<String, MetricTotalsView> = [
        ("openstack.api.network.GET.ports.200", (2, 2, 12)),
        ("openstack.api.network.GET.ports.attempted", (2, 0, 0)),
        ("openstack.api.network.DELETE.port.failed", (1, 0, 0)),
        ("openstack.api.network.DELETE.port.attempted", (1, 0, 0)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
}

type MetricTotalsView = (u64, u64, u64);

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| vars.get(k).cloned()
}

fn settings(target: &str, prefix: &str) -> Option<ApiStatsd> {
    Some(ApiStatsd {
        target: target.into(),
        prefix: prefix.into(),
    })
}

#[test]
fn statsd_settings_follow_the_sdks_precedence() {
    let none = env(&[]);
    assert_eq!(ApiStatsd::resolve(&none, None, None), Ok(None));
    // The environment alone; a port alone means localhost.
    let e = env(&[("STATSD_HOST", "s"), ("STATSD_PREFIX", "np")]);
    assert_eq!(
        ApiStatsd::resolve(&e, None, None),
        Ok(settings("s:8125", "np"))
    );
    let e = env(&[("STATSD_PORT", "9")]);
    assert_eq!(
        ApiStatsd::resolve(&e, None, None),
        Ok(settings("localhost:9", "openstack.api"))
    );
    // The environment wins over the top of clouds.yaml, which fills the rest.
    let global = serde_json::json!({"host": "g", "port": 7, "prefix": "gp"});
    let e = env(&[("STATSD_HOST", "s"), ("STATSD_PREFIX", "")]);
    assert_eq!(
        ApiStatsd::resolve(&e, Some(&global), None),
        Ok(settings("s:7", "gp"))
    );
    // The cloud's own mapping overrides, key by key, the environment too.
    let cloud = serde_json::json!({"prefix": "cp"});
    assert_eq!(
        ApiStatsd::resolve(&e, Some(&global), Some(&cloud)),
        Ok(settings("s:7", "cp"))
    );
    let cloud = serde_json::json!({"host": null});
    assert_eq!(
        ApiStatsd::resolve(&none, Some(&global), Some(&cloud)),
        Ok(settings("localhost:7", "gp"))
    );
    // An empty mapping of the cloud changes nothing.
    let empty = serde_json::json!({});
    assert_eq!(
        ApiStatsd::resolve(&none, Some(&global), Some(&empty)),
        Ok(settings("g:7", "gp"))
    );
    // A port that is no number.
    let e = env(&[("STATSD_PORT", "x")]);
    assert!(ApiStatsd::resolve(&e, None, None).is_err());
    let e = env(&[("STATSD_HOST", "::1")]);
    assert_eq!(
        ApiStatsd::resolve(&e, None, None),
        Ok(settings("[::1]:8125", "openstack.api"))
    );
}
