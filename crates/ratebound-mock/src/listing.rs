//! The mock's paginated listings: any request of a request-limited profile whose query has
//! `total=N` is a listing of N records, served a page at a time in every common style.
//!
//! Pure: a path and query in, a page out. The page size comes from `page[size]`,
//! `per_page` or `limit` (default 25, at most [`MAX_PAGE_SIZE`], like Zendesk's cursor
//! pagination; more is a 400); the position from a cursor (`page[after]` or `cursor`) or a
//! 1-based `page`. Every page names the next one three ways, so a client can follow any of
//! them: `meta.after_cursor` (with `meta.has_more`), `links.next` (a path) and a
//! `Link: <...>; rel="next"` header (RFC 8288). Records are `{"id": "<collection>-<k>"}`,
//! under the collection's name (the path's last segment), as Zendesk lists them.
//! A real API knows its own sizes; the mock takes `total` from the query instead.

use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

/// The largest page the mock serves.
pub const MAX_PAGE_SIZE: u64 = 100;

const DEFAULT_PAGE_SIZE: u64 = 25;

/// One page of a listing: the body, and the `link` header if there is a next page.
pub(crate) struct Page {
    pub(crate) body: Value,
    pub(crate) link: Option<String>,
}

/// Query pairs, percent-decoded.
fn query(path: &str) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    path.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], keys: &[&str]) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| keys.contains(&k.as_str()))
        .map(|(_, v)| v.as_str())
}

/// The page `path` asks for, `None` when it is no listing (no `total`), or the 400 body
/// when it asks for a page larger than the maximum or gives a bad number.
pub(crate) fn page(path: &str) -> Option<Result<Page, Value>> {
    let pairs = query(path);
    let total = get(&pairs, &["total"])?;
    let number = |v: &str| v.parse::<u64>().ok();
    let Some(total) = number(total) else {
        return Some(Err(bad("`total` must be a whole number")));
    };
    let size = match get(&pairs, &["page[size]", "per_page", "limit"]).map(number) {
        None => DEFAULT_PAGE_SIZE,
        Some(Some(n)) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
        Some(_) => {
            return Some(Err(bad(&format!("page size must be 1 to {MAX_PAGE_SIZE}"))));
        }
    };
    let offset = match (
        get(&pairs, &["page[after]", "cursor"]),
        get(&pairs, &["page"]),
    ) {
        (Some(cursor), _) => match cursor.strip_prefix('c').and_then(number) {
            Some(n) => n,
            None => return Some(Err(bad("unknown cursor"))),
        },
        (None, Some(page)) => match number(page) {
            Some(n) if n >= 1 => (n - 1) * size,
            _ => return Some(Err(bad("`page` must be 1 or more"))),
        },
        (None, None) => 0,
    };
    let base = path.split('?').next().unwrap_or_default();
    let collection = base.rsplit('/').find(|s| !s.is_empty()).unwrap_or("items");
    let end = total.min(offset + size);
    let records: Vec<Value> = (offset..end)
        .map(|k| json!({"id": format!("{collection}-{}", k + 1)}))
        .collect();
    let more = end < total;
    let next = more.then(|| {
        let kept: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| !["page[after]", "cursor", "page"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{base}?{}&page={}", kept.join("&"), end / size + 1)
    });
    let cursor = more.then(|| format!("c{end}"));
    Some(Ok(Page {
        body: json!({
            collection: records,
            "meta": {"has_more": more, "after_cursor": cursor},
            "links": {"next": next},
        }),
        link: next.map(|n| format!("<{n}>; rel=\"next\"")),
    }))
}

fn bad(message: &str) -> Value {
    json!({"error": "InvalidPagination", "description": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> Page {
        match page(path) {
            Some(Ok(p)) => p,
            _ => panic!("{path} is a listing page"),
        }
    }

    #[test]
    fn a_listing_is_served_in_pages_named_by_cursor_link_and_next() {
        let first = ok("/api/v2/articles?total=250&page[size]=100");
        assert_eq!(first.body["articles"].as_array().unwrap().len(), 100);
        assert_eq!(first.body["articles"][0]["id"], "articles-1");
        assert_eq!(first.body["meta"]["after_cursor"], "c100");
        assert_eq!(
            first.link.as_deref(),
            Some("</api/v2/articles?total=250&page[size]=100&page=2>; rel=\"next\"")
        );
        let by_cursor = ok("/api/v2/articles?total=250&page%5Bsize%5D=100&page%5Bafter%5D=c200");
        let by_page = ok("/api/v2/articles?total=250&page[size]=100&page=3");
        assert_eq!(by_cursor.body, by_page.body, "cursor and page agree");
        assert_eq!(by_page.body["articles"].as_array().unwrap().len(), 50);
        assert_eq!(
            by_page.body["meta"],
            json!({"has_more": false, "after_cursor": null})
        );
        assert_eq!(by_page.body["links"]["next"], Value::Null);
        assert!(by_page.link.is_none());
    }

    #[test]
    fn pages_above_the_maximum_and_bad_cursors_are_refused() {
        assert!(matches!(page("/a?total=5&per_page=101"), Some(Err(_))));
        assert!(matches!(page("/a?total=5&cursor=zz"), Some(Err(_))));
        assert!(page("/a?per_page=10").is_none(), "no total: no listing");
        assert_eq!(ok("/a?total=0").body["a"], json!([]));
    }
}
