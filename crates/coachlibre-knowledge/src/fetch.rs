//! Fetching a web page for a tenant: http(s) only, redirects followed by hand so that every
//! hop's address is checked (a public page could otherwise send the server to a private one),
//! a size limit, and clear errors. Used by URL imports and business analyses.

use coachlibre_core::{Error, Result};
use reqwest::Url;

/// What a fetch brought back.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// After redirects.
    pub url: Url,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// The HTTP client [`get`] expects: it follows no redirects itself (`get` does, checking each
/// hop), and gives up after `timeout`.
pub fn client(user_agent: &str, timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
        .unwrap_or_default()
}

/// An http or https URL, or a clear 4xx.
pub fn parse_url(url: &str) -> Result<Url> {
    let parsed =
        Url::parse(url.trim()).map_err(|e| Error::invalid("url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::invalid(
            "url",
            "only http and https URLs with a host can be fetched",
        ));
    }
    Ok(parsed)
}

/// GET `url` (the client must not follow redirects itself), refusing private addresses unless
/// `allow_private`, and more than `max_bytes`.
pub async fn get(
    http: &reqwest::Client,
    url: Url,
    allow_private: bool,
    max_bytes: usize,
) -> Result<Fetched> {
    let failed = |e: reqwest::Error| Error::invalid("url", format!("could not fetch: {e}"));
    let mut target = url;
    let mut hops = 0;
    let mut resp = loop {
        if !allow_private {
            check_public(&target).await?;
        }
        let resp = http.get(target.clone()).send().await.map_err(failed)?;
        if !resp.status().is_redirection() {
            break resp;
        }
        hops += 1;
        let next = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| target.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        match next {
            Some(u) if hops <= 5 => target = u,
            _ => {
                return Err(Error::invalid(
                    "url",
                    "too many or invalid redirects (at most 5, to http or https)",
                ));
            }
        }
    };
    if !resp.status().is_success() {
        return Err(Error::invalid(
            "url",
            format!("{target} answered {}", resp.status()),
        ));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > max_bytes {
            return Err(Error::TooLarge(format!(
                "{target} is larger than {} MiB",
                max_bytes / (1024 * 1024)
            )));
        }
    }
    Ok(Fetched {
        url: target,
        content_type,
        bytes,
    })
}

/// Refuse hosts that resolve to loopback or private addresses.
async fn check_public(url: &Url) -> Result<()> {
    let host = url
        .host_str()
        .ok_or_else(|| Error::invalid("url", "the URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Error::invalid("url", format!("cannot resolve {host}: {e}")))?;
    for a in addrs {
        if is_private(a.ip()) {
            return Err(Error::invalid(
                "url",
                format!(
                    "{host} is a private or local address; fetching from it is off \
                     (knowledge.allow_private_urls)"
                ),
            ));
        }
    }
    Ok(())
}

/// Loopback, private, link-local, unspecified or otherwise non-public addresses.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v) => {
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
        }
        std::net::IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || (v.segments()[0] & 0xfe00) == 0xfc00
                || (v.segments()[0] & 0xffc0) == 0xfe80
                || v.to_ipv4_mapped().is_some_and(|m| is_private(m.into()))
        }
    }
}

/// A robots.txt group: the user agents it names, and its rules (allow?, path pattern).
type RobotsGroup = (Vec<String>, Vec<(bool, String)>);

/// Whether robots.txt lets `agent` fetch `path`: the group naming the agent (by a
/// case-insensitive prefix of its name), else the `*` group; the longest matching `Allow` or
/// `Disallow` rule wins, `Allow` on a tie; no rule means allowed.
pub fn robots_allows(robots: &str, agent: &str, path: &str) -> bool {
    let agent = agent.to_ascii_lowercase();
    let mut groups: Vec<RobotsGroup> = Vec::new();
    let mut in_agents = false;
    for line in robots.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        match key.as_str() {
            "user-agent" => {
                if !in_agents {
                    groups.push((Vec::new(), Vec::new()));
                }
                in_agents = true;
                if let Some(g) = groups.last_mut() {
                    g.0.push(value.to_ascii_lowercase());
                }
            }
            "allow" | "disallow" => {
                in_agents = false;
                if let Some(g) = groups.last_mut()
                    && !value.is_empty()
                {
                    g.1.push((key == "allow", value.to_owned()));
                }
            }
            _ => {}
        }
    }
    let named = groups.iter().find(|(agents, _)| {
        agents
            .iter()
            .any(|a| a != "*" && agent.starts_with(a.as_str()))
    });
    let group = named.or_else(|| {
        groups
            .iter()
            .find(|(agents, _)| agents.iter().any(|a| a == "*"))
    });
    let Some((_, rules)) = group else {
        return true;
    };
    let matches = |pattern: &str| -> bool {
        let anchored = pattern.ends_with('$');
        let pattern = pattern.trim_end_matches('$');
        // `*` matches any run of characters.
        let parts: Vec<&str> = pattern.split('*').collect();
        let mut pos = 0;
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                if !path.starts_with(part) {
                    return false;
                }
                pos = part.len();
            } else if let Some(found) = path[pos..].find(part) {
                pos += found + part.len();
            } else {
                return false;
            }
        }
        !anchored || pos == path.len()
    };
    let best = rules
        .iter()
        .filter(|(_, p)| matches(p))
        .max_by_key(|(allow, p)| (p.len(), *allow));
    best.is_none_or(|(allow, _)| *allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robots_rules() {
        let robots = "User-agent: *\nDisallow: /private\nAllow: /private/ok\n\n\
                      User-agent: CoachLibre\nUser-agent: other\nDisallow: /\nAllow: /$\n";
        assert!(robots_allows(robots, "Googlebot", "/"));
        assert!(!robots_allows(robots, "Googlebot", "/private/x"));
        assert!(robots_allows(robots, "Googlebot", "/private/ok/y"));
        assert!(robots_allows(robots, "CoachLibre/0.1", "/"));
        assert!(!robots_allows(robots, "CoachLibre/0.1", "/about"));
        assert!(robots_allows("", "CoachLibre", "/anything"));
        assert!(!robots_allows(
            "User-agent: *\nDisallow: /*.pdf$",
            "x",
            "/a/b.pdf"
        ));
        assert!(robots_allows(
            "User-agent: *\nDisallow: /*.pdf$",
            "x",
            "/a/b.pdf.html"
        ));
        assert!(robots_allows("User-agent: *\nDisallow:", "x", "/"));
    }

    #[test]
    fn only_http_urls() {
        assert!(parse_url("https://example.com/a").is_ok());
        assert!(parse_url("ftp://example.com").is_err());
        assert!(parse_url("not a url").is_err());
        assert!(is_private("127.0.0.1".parse().expect("ip")));
        assert!(is_private("10.1.2.3".parse().expect("ip")));
        assert!(!is_private("93.184.216.34".parse().expect("ip")));
    }
}
