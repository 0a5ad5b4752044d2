//! Which format a listing is wanted in, decided as upstream's web app does
//! with WebOb: `request.accept.acceptable_offers(['text/html',
//! 'text/plain', 'application/json'])`, JSON when the best offer is
//! `application/json`, the text table otherwise.

/// The offers, in upstream's order (ties go to the earlier one).
const OFFERS: [(&str, &str); 3] = [("text", "html"), ("text", "plain"), ("application", "json")];

/// The format of a listing response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    /// The PrettyTable text (`text/plain`).
    Pretty,
    /// JSON (`application/json`).
    Json,
}

impl Format {
    /// The name upstream uses in its cache key ("pretty", "json").
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::Pretty => "pretty",
            Format::Json => "json",
        }
    }
}

/// One media range of an `Accept` header.
struct Range {
    kind: String,
    subtype: String,
    has_params: bool,
    q: f64,
}

/// The format for this `Accept` header, or `None` when the header accepts
/// none of the offers (upstream then fails with a 500; we answer 406).
/// A missing or malformed header accepts everything, as in WebOb.
pub(crate) fn wanted_format(accept: Option<&str>) -> Option<Format> {
    let Some(ranges) = accept.and_then(parse) else {
        return Some(Format::Pretty);
    };
    // For each offer: the q of the most specific matching range.
    let mut best: Vec<(usize, f64)> = Vec::new();
    for (index, (kind, subtype)) in OFFERS.iter().enumerate() {
        let mut found: Option<(u8, f64)> = None;
        for range in &ranges {
            let specificity = if range.kind == *kind && range.subtype == *subtype {
                if range.has_params {
                    // Offers carry no parameters: a range with parameters
                    // does not match them.
                    continue;
                }
                3
            } else if range.subtype == "*" && range.kind == *kind {
                2
            } else if range.kind == "*" && range.subtype == "*" {
                1
            } else {
                continue;
            };
            if found.map_or(true, |(s, _)| s < specificity) {
                found = Some((specificity, range.q));
            }
        }
        if let Some((_, q)) = found {
            if q > 0.0 {
                best.push((index, q));
            }
        }
    }
    // Highest q first; equal q keep the offers' order.
    best.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    best.first().map(|(index, _)| {
        if *index == 2 {
            Format::Json
        } else {
            Format::Pretty
        }
    })
}

/// Parses an `Accept` header; `None` if it is not valid (WebOb then treats
/// it as absent).
fn parse(header: &str) -> Option<Vec<Range>> {
    let mut ranges = Vec::new();
    for element in header.split(',') {
        let element = element.trim();
        if element.is_empty() {
            continue;
        }
        let mut parts = element.split(';');
        let media = parts.next()?.trim();
        let (kind, subtype) = media.split_once('/')?;
        if !is_token(kind) || !is_token(subtype) || (kind == "*" && subtype != "*") {
            return None;
        }
        let mut q = 1.0;
        let mut has_params = false;
        for param in parts {
            let (name, value) = param.trim().split_once('=')?;
            let name = name.trim();
            if !is_token(name) {
                return None;
            }
            if name.eq_ignore_ascii_case("q") {
                q = parse_qvalue(value.trim())?;
                // What follows the weight are accept-extensions.
                break;
            }
            has_params = true;
        }
        ranges.push(Range {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            has_params,
            q,
        });
    }
    Some(ranges)
}

/// RFC 7231 `qvalue`: `0[.ddd]` or `1[.000]`.
fn parse_qvalue(value: &str) -> Option<f64> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let frac_ok = frac.len() <= 3 && frac.chars().all(|c| c.is_ascii_digit());
    let ok = match int {
        "0" => frac_ok,
        "1" => frac_ok && frac.chars().all(|c| c == '0'),
        _ => false,
    };
    if ok {
        value.parse().ok()
    } else {
        None
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}
