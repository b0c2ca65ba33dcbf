//! The front door's own pages: plain HTML, no script, every value escaped.

use hyper::StatusCode;
use labssh_proto::pb;

/// `text` safe inside HTML text and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:52em;margin:2em auto;padding:0 1em}\
table{border-collapse:collapse}td,th{padding:.3em .8em;text-align:left;border-bottom:1px solid #ddd}\
.problem{color:#a00}form.inline{display:inline}";

fn frame(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
}

/// An error page.
pub fn message(status: StatusCode, message: &str) -> String {
    frame(
        "labssh",
        &format!(
            "<h1>{} {}</h1><p id=\"message\">labssh: {}</p><p><a href=\"/\">your services</a></p>",
            status.as_u16(),
            esc(status.canonical_reason().unwrap_or("")),
            esc(message)
        ),
    )
}

/// The login form.
pub fn login(domain: &str, next: &str, token: &str, problem: Option<&str>) -> String {
    let problem = problem
        .map(|p| format!("<p class=\"problem\" id=\"problem\">{}</p>", esc(p)))
        .unwrap_or_default();
    frame(
        &format!("Log in to {domain}"),
        &format!(
            "<h1>Log in to {}</h1>{problem}\
             <form method=\"post\" action=\"/login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"next\" value=\"{}\">\
             <p><label>Login name <input name=\"user\" id=\"user\" autocomplete=\"username\" autofocus></label></p>\
             <p><label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\
             <p><button type=\"submit\" id=\"login\">Log in</button></p></form>\
             <p>The same name and password as for <code>ssh</code>.</p>",
            esc(domain),
            esc(token),
            esc(next)
        ),
    )
}

/// The portal: environments with their containers' state and buttons, and the
/// services with their links (`site`: the domain, with the port browsers use).
pub fn portal(
    site: &str,
    user: &str,
    services: &[pb::ServiceInfo],
    containers: &[pb::PlacedContainer],
    token: &str,
) -> String {
    let token = esc(token);
    let mut body = format!(
        "<h1>{}'s lab</h1><form class=\"inline\" method=\"post\" action=\"/logout\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <button type=\"submit\" id=\"logout\">Log out</button></form>",
        esc(user)
    );
    let (own, readable): (Vec<&pb::ServiceInfo>, Vec<&pb::ServiceInfo>) =
        services.iter().partition(|s| !s.read_only);
    body += "<h2>Services</h2>";
    if own.is_empty() {
        body += "<p id=\"no-services\">Nothing listens in your running containers. A server you start (<code>python3 -m http.server 8000</code>) shows here within a few seconds.</p>";
    } else {
        body += &service_table("services", &own, site);
    }
    if !readable.is_empty() {
        body += "<h2>Students' services you may read</h2>";
        body += &service_table("readable", &readable, site);
    }
    body += "<h2>Containers</h2>";
    if containers.is_empty() {
        body += &format!(
            "<p>None yet: <code>ssh {}@{}</code> makes one.</p>",
            esc(user),
            esc(site.split(':').next().unwrap_or(site))
        );
    } else {
        body += "<table id=\"containers\"><tr><th>Environment</th><th>State</th><th></th></tr>";
        for placed in containers {
            let Some(c) = &placed.container else { continue };
            let state = c.state().word();
            let verb = if state == "running" { "stop" } else { "start" };
            body += &format!(
                "<tr><td>{env}</td><td>{state}</td><td><form class=\"inline\" method=\"post\" action=\"/action\">\
                 <input type=\"hidden\" name=\"token\" value=\"{token}\">\
                 <input type=\"hidden\" name=\"environment\" value=\"{env}\">\
                 <button type=\"submit\" name=\"verb\" value=\"{verb}\">{verb}</button></form></td></tr>",
                env = esc(&c.environment),
                state = esc(&state),
            );
        }
        body += "</table>";
    }
    frame(&format!("{user} — labssh"), &body)
}

/// A table of services with both links.
fn service_table(id: &str, services: &[&pb::ServiceInfo], site: &str) -> String {
    let mut table = format!(
        "<table id=\"{id}\"><tr><th>Service</th><th>Student</th><th>Environment</th><th>Port</th><th>Open</th></tr>"
    );
    for s in services {
        let name = esc(&s.name);
        let label = if s.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", esc(&s.label))
        };
        table += &format!(
            "<tr><td>{name}{label}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td><a class=\"service\" href=\"https://{name}.{site}/\">{name}.{site}</a> · <a href=\"/s/{name}/\">/s/{name}/</a></td></tr>",
            esc(&s.user),
            esc(&s.environment),
            s.port,
            site = esc(site),
        );
    }
    table + "</table>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let page = login("lab", "\"><script>x</script>", "t", Some("<b>"));
        assert!(!page.contains("<script>x"), "{page}");
        assert!(page.contains("&quot;&gt;&lt;script&gt;"), "{page}");
        assert!(page.contains("&lt;b&gt;"), "{page}");
    }
}
