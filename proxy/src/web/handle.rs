//! What each request is: the portal and its login on `DOMAIN`, a service by its host
//! (`NAME.DOMAIN`) or its path (`DOMAIN/s/NAME/`), and who may have it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use labssh_proto::pb;
use labssh_proto::services::could_be_of;
use labssh_telemetry::metrics::{self as telemetry, WebRoute};

use super::session::{self, WebSession, COOKIE, CSRF_COOKIE};
use super::{pages, relay, Web};
use crate::auth::{Attempt, Client, Credential, Outcome};

/// Every response's body: a page of ours or a service's stream.
pub(crate) type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// The largest login form read.
const MAX_FORM: usize = 8 * 1024;

/// A body of ours.
pub(crate) fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain answer: `status`, an HTML page.
pub(crate) fn page(status: StatusCode, html: String) -> Response<Body> {
    let mut response = Response::new(full(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The front door's own pages are never framed, and run no script of anyone's.
    // (No form-action: a login goes on to the service it came from, another origin.)
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    response
}

/// An error page with one line saying what is wrong.
pub(crate) fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    page(status, pages::message(status, message))
}

/// A redirect to `location`.
fn see_other(location: &str) -> Response<Body> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Adds a `Set-Cookie` of `cookie` (always header-safe: built of our own tokens).
fn set_cookie(response: &mut Response<Body>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The request's host, lowercase, without a port.
fn host_of(request: &Request<Incoming>) -> String {
    let host = request
        .uri()
        .authority()
        .map(|a| a.host().to_owned())
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned())
        })
        .unwrap_or_default();
    host.to_ascii_lowercase()
}

/// `:PORT` when the browser reached the front door on a port of its own (a test, a
/// `labssh up`), for the links and redirects it follows; empty on 443.
fn port_suffix(request: &Request<Incoming>) -> String {
    let port = request.uri().port_u16().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.rsplit_once(':'))
            .and_then(|(_, port)| port.parse().ok())
    });
    match port {
        Some(443) | None => String::new(),
        Some(port) => format!(":{port}"),
    }
}

/// The cookie named `name`, if the request has it.
fn cookie_of<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .find_map(|h| session::cookie(h, name))
}

/// The browser's session, if its cookie is good; with the cookie's value.
fn session_of(web: &Web, request: &Request<Incoming>) -> Option<(WebSession, String)> {
    let value = cookie_of(request, COOKIE)?;
    let session = web.sealer.open(value, session::now())?;
    Some((session, value.to_owned()))
}

/// Answers one request, counted by route and status class.
pub(crate) async fn handle(
    web: &Web,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let (route, response) = answer(web, peer, request).await;
    telemetry::web_request(route, response.status().as_u16(), started.elapsed());
    response
}

/// The answer to one request, and what it was for.
async fn answer(
    web: &Web,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> (WebRoute, Response<Body>) {
    let host = host_of(&request);
    let port = port_suffix(&request);
    let session = session_of(web, &request);
    if let Some(name) = host.strip_suffix(&format!(".{}", web.domain)) {
        if name.contains('.') {
            return (
                WebRoute::Other,
                refuse(StatusCode::NOT_FOUND, "no such site here"),
            );
        }
        let name = name.to_owned();
        let response = service(web, peer, session, &host, &port, &name, None, request).await;
        return (WebRoute::Service, response);
    }
    if host != web.domain {
        let response = refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!("this is the front door of {}", web.domain),
        );
        return (WebRoute::Other, response);
    }
    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/s/") {
        let name = rest.split_once('/').map_or(rest, |(name, _)| name);
        let name = name.to_owned();
        if !rest.contains('/') {
            // Relative links resolve under the service only below its slash.
            return (WebRoute::Service, see_other(&format!("/s/{name}/")));
        }
        let prefix = format!("/s/{name}");
        let response = service(
            web,
            peer,
            session,
            &host,
            &port,
            &name,
            Some(prefix),
            request,
        )
        .await;
        return (WebRoute::Service, response);
    }
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/login") => (WebRoute::Login, login_page(web, &request)),
        (Method::POST, "/login") => (WebRoute::Login, login(web, peer, request).await),
        (Method::POST, "/logout") => (WebRoute::Logout, logout(web, session, request).await),
        (Method::POST, "/action") => (WebRoute::Action, action(web, session, request).await),
        (Method::GET, "/") => {
            let response = match session {
                Some((session, value)) => portal(web, &session, &value, &port).await,
                None => see_other("/login"),
            };
            (WebRoute::Portal, response)
        }
        _ => (
            WebRoute::Other,
            refuse(StatusCode::NOT_FOUND, "nothing here"),
        ),
    }
}

/// How a request may have a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The student's own.
    Owner,
    /// A reader's (a TA of its environment): GET and HEAD only.
    Reader,
    /// Its owner shared it publicly: anyone, logged in or not, as a stranger.
    Public,
}

/// Asks the controller for the services that `request` may see; one by name is
/// answered again from the replica's short memory ([`super::lookups`]).
async fn lookup(
    web: &Web,
    request: pb::ListServicesRequest,
) -> Result<Vec<pb::ServiceInfo>, Response<Body>> {
    let named = !request.name.is_empty();
    if named {
        let kept = web.lookups.get(&request);
        telemetry::web_service_lookup(kept.is_some());
        if let Some(services) = kept {
            return Ok(services);
        }
    }
    let mut controller = web.shared.upstream.controller();
    let timeout = web.shared.config.controller_timeout();
    match tokio::time::timeout(timeout, controller.list_services(request.clone())).await {
        Ok(Ok(reply)) => {
            let services = reply.into_inner().services;
            if named {
                web.lookups.put(&request, &services);
            }
            Ok(services)
        }
        Ok(Err(status)) => {
            tracing::warn!(error = %status.message(), "web: the controller refused a service lookup");
            Err(refuse(
                StatusCode::BAD_GATEWAY,
                "the controller cannot be asked; try again in a minute",
            ))
        }
        Err(_) => Err(refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "the controller did not answer; try again in a minute",
        )),
    }
}

/// What `session`'s login may open (their own, and what their groups read), only
/// the service `name` unless it is empty.
fn viewing(session: &WebSession, name: &str) -> pb::ListServicesRequest {
    pb::ListServicesRequest {
        viewer: session.user.clone(),
        viewer_identity: Some(crate::upstream::wire_identity(&session.identity)),
        name: name.to_owned(),
        ..Default::default()
    }
}

/// The service `name` as `session` may have it: their own or one they read (their
/// own first, should a name be both), else one its owner shares publicly.
async fn find(
    web: &Web,
    session: Option<&WebSession>,
    name: &str,
) -> Result<Option<(pb::ServiceInfo, Access)>, Response<Body>> {
    if let Some(session) = session {
        let mut services = lookup(web, viewing(session, name)).await?;
        services.sort_by_key(|s| s.read_only);
        if let Some(service) = services.into_iter().next() {
            let access = if service.read_only {
                Access::Reader
            } else {
                Access::Owner
            };
            return Ok(Some((service, access)));
        }
    }
    let Some(owner) = crate::shares::owner(web.shared.redis.as_deref(), name).await else {
        return Ok(None);
    };
    let services = lookup(
        web,
        pb::ListServicesRequest {
            user: owner,
            name: name.to_owned(),
            ..Default::default()
        },
    )
    .await?;
    Ok(services.into_iter().next().map(|s| (s, Access::Public)))
}

/// A service by name: its owner's session relays to it, a reader's reads it, anyone
/// opens a public one; everyone else is refused.
#[allow(clippy::too_many_arguments)]
async fn service(
    web: &Web,
    peer: SocketAddr,
    session: Option<(WebSession, String)>,
    host: &str,
    port: &str,
    name: &str,
    prefix: Option<String>,
    request: Request<Incoming>,
) -> Response<Body> {
    let session = session.map(|(session, _)| session);
    let found = match find(web, session.as_ref(), name).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some((service, access)) = found else {
        let Some(session) = session else {
            if request.method() == Method::GET {
                let here = format!(
                    "https://{host}{port}{}",
                    request.uri().path_and_query().map_or("/", |p| p.as_str())
                );
                let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
                return see_other(&format!("https://{}{port}/login?next={next}", web.domain));
            }
            return refuse(StatusCode::UNAUTHORIZED, "log in first");
        };
        // Whether another's service exists is not told: only the viewer's own
        // names answer "nothing listens".
        if could_be_of(name, &session.user) {
            return refuse(
                StatusCode::NOT_FOUND,
                &format!("nothing of yours listens as {name} (a server you start shows within a few seconds)"),
            );
        }
        tracing::info!(user = %session.user, service = %name, "web: refused another's service");
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("{name} is not one of your services"),
        );
    };
    let viewer = session.as_ref().map_or("anyone", |s| s.user.as_str());
    let upgrade = relay::wants_upgrade(&request);
    let safe = matches!(*request.method(), Method::GET | Method::HEAD) && !upgrade;
    if access == Access::Reader && !safe {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "you may read {name} (its environment {} lets your group look), not change it: GET and HEAD only, no WebSocket",
                service.environment
            ),
        );
    }
    // A page of another site (another student's service among them: same site,
    // so cookies go along) may not post to this one or open its WebSocket.
    if !safe {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        let own = format!("https://{host}{port}");
        if origin.is_some_and(|o| o != own) {
            tracing::info!(%viewer, service = %name, origin = ?origin, "web: refused a cross-origin request");
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("a page of another site may not send this to {name}"),
            );
        }
    }
    // The owner's identity goes with the owner's requests only; a reader or a
    // stranger reaches the running container and makes nothing.
    let grant = match (access, session.as_ref()) {
        (Access::Owner, Some(session)) => relay::Grant::Owner(&session.identity),
        (Access::Reader, _) => relay::Grant::Reader,
        _ => relay::Grant::Stranger { shared_as: name },
    };
    let reader = access != Access::Owner;
    let mut response =
        relay::relay(web, peer, grant, &service, host, prefix.clone(), request).await;
    if reader && prefix.is_some() {
        // Under /s/ every service shares the front door's origin: a page a reader
        // or a stranger opens runs sandboxed, in an origin of its own, so its
        // scripts cannot act as them on the portal or on other services.
        response.headers_mut().append(
            "content-security-policy",
            HeaderValue::from_static(
                "sandbox allow-scripts allow-forms allow-popups allow-downloads",
            ),
        );
    }
    response
}

/// The login form, for `next`'s sake (a `next` query parameter).
fn login_page(web: &Web, request: &Request<Incoming>) -> Response<Body> {
    let next = request
        .uri()
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "next"))
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    login_form(web, &next, None)
}

/// The login form with a fresh anti-forgery token (its cookie set beside it);
/// `problem` says why the last attempt failed.
fn login_form(web: &Web, next: &str, problem: Option<&str>) -> Response<Body> {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let status = match problem {
        Some(_) => StatusCode::UNAUTHORIZED,
        None => StatusCode::OK,
    };
    let mut response = page(status, pages::login(&web.domain, next, &token, problem));
    let cookie = format!(
        "{CSRF_COOKIE}={token}; Path=/login; HttpOnly; Secure; SameSite=Strict; Max-Age=3600"
    );
    set_cookie(&mut response, &cookie);
    response
}

/// The fields of a urlencoded form, at most [`MAX_FORM`] bytes of it.
async fn form(request: Request<Incoming>) -> Option<Vec<(String, String)>> {
    let limited = http_body_util::Limited::new(request.into_body(), MAX_FORM);
    let body = limited.collect().await.ok()?.to_bytes();
    Some(form_urlencoded::parse(&body).into_owned().collect())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Where to go after a login: a page of this site or one of its services, never
/// elsewhere.
fn safe_next(domain: &str, next: &str) -> String {
    let same_site = next.starts_with('/') && !next.starts_with("//");
    let service = next
        .strip_prefix("https://")
        .map(|rest| {
            rest.split_once('/')
                .map_or(rest, |(authority, _)| authority)
        })
        .map(|authority| {
            authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host)
        })
        .is_some_and(|host| host == domain || host.ends_with(&format!(".{domain}")));
    // A browser reads `\` as `/` and `@` as the end of a user name: either could make
    // a name of ours end elsewhere.
    let plain = !next.contains(['\\', '@']) && !next.chars().any(char::is_control);
    if (same_site || service) && plain {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

/// A login: the form's anti-forgery token, then the authenticators as for SSH (the
/// same brute-force limits and credential cache), then the session cookie.
async fn login(web: &Web, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let csrf = cookie_of(&request, CSRF_COOKIE).map(str::to_owned);
    let Some(fields) = form(request).await else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the login form is too large or unreadable",
        );
    };
    if csrf.is_none() || csrf.as_deref() != Some(field(&fields, "csrf")) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the login form expired or came from another site; load it again",
        );
    }
    let user = field(&fields, "user").trim().to_owned();
    let password = field(&fields, "password").to_owned();
    let next = safe_next(&web.domain, field(&fields, "next"));
    let retry = |problem: &str| login_form(web, &next, Some(problem));
    if !labssh_proto::names::valid_user(&user) {
        return retry("that is not a login name");
    }
    let client = Client {
        conn: 0,
        peer: peer.to_string(),
        ip: Some(peer.ip()),
        span: tracing::info_span!("web_login", client = %peer),
        unavailable: AtomicBool::new(false),
        audit: web.shared.audit.clone(),
    };
    let attempt = Attempt {
        user: user.clone(),
        credential: Credential::Password(password),
    };
    let identity = match client.decide(&web.shared, attempt).await {
        Outcome::LoggedIn(_, identity) => identity,
        Outcome::Unavailable => {
            return retry("the login service is unavailable; try again in a minute")
        }
        _ => return retry("wrong name or password"),
    };
    let session = WebSession {
        user: user.clone(),
        identity,
        expires: session::now() + web.session_secs,
    };
    let value = web.sealer.seal(&session);
    web.shared.audit.record(
        "web_login",
        serde_json::json!({"user": user, "client": peer.to_string()}),
    );
    tracing::info!(%user, client = %peer, "web login");
    let mut response = see_other(&next);
    let cookie = format!(
        "{COOKIE}={value}; Domain={}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
        web.domain, web.session_secs
    );
    set_cookie(&mut response, &cookie);
    response
}

/// A form of the portal's: its session and its anti-forgery token checked.
async fn checked_form(
    web: &Web,
    session: Option<(WebSession, String)>,
    request: Request<Incoming>,
) -> Result<(WebSession, Vec<(String, String)>), Response<Body>> {
    let Some((session, value)) = session else {
        return Err(see_other("/login"));
    };
    let Some(fields) = form(request).await else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the form is too large or unreadable",
        ));
    };
    if field(&fields, "token") != web.sealer.form_token(&value) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "the form came from another site; go back and try again",
        ));
    }
    Ok((session, fields))
}

/// Logs the browser out: its cookie goes.
async fn logout(
    web: &Web,
    session: Option<(WebSession, String)>,
    request: Request<Incoming>,
) -> Response<Body> {
    let (session, _) = match checked_form(web, session, request).await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    web.shared
        .audit
        .record("web_logout", serde_json::json!({"user": session.user}));
    let mut response = see_other("/login");
    let cookie = format!(
        "{COOKIE}=; Domain={}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0",
        web.domain
    );
    set_cookie(&mut response, &cookie);
    response
}

/// A start or stop of one of the student's own containers, from the portal.
async fn action(
    web: &Web,
    session: Option<(WebSession, String)>,
    request: Request<Incoming>,
) -> Response<Body> {
    let (session, fields) = match checked_form(web, session, request).await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let verb = match field(&fields, "verb") {
        "start" => pb::ContainerVerb::Start,
        "stop" => pb::ContainerVerb::Stop,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "only start and stop are offered here",
            )
        }
    };
    let environment = field(&fields, "environment").to_owned();
    if !crate::login_name::valid_environment(&environment) {
        return refuse(StatusCode::BAD_REQUEST, "that is not an environment");
    }
    let request = pb::ContainerActionRequest {
        user: session.user.clone(),
        environment,
        verb: verb.into(),
        remove_home: false,
        by: "student".to_owned(),
    };
    let mut controller = web.shared.upstream.controller();
    match tokio::time::timeout(
        std::time::Duration::from_secs(180),
        controller.container_action(request),
    )
    .await
    {
        Ok(Ok(_)) => see_other("/"),
        Ok(Err(status)) => refuse(StatusCode::BAD_GATEWAY, status.message()),
        Err(_) => refuse(
            StatusCode::GATEWAY_TIMEOUT,
            "the controller did not answer in time",
        ),
    }
}

/// The portal: the student's environments and containers, their services with links.
async fn portal(web: &Web, session: &WebSession, value: &str, port: &str) -> Response<Body> {
    let services = match lookup(web, viewing(session, "")).await {
        Ok(services) => services,
        Err(response) => return response,
    };
    let mut controller = web.shared.upstream.controller();
    let timeout = web.shared.config.controller_timeout();
    let user = session.user.clone();
    let containers = tokio::time::timeout(
        timeout,
        controller.list_containers(pb::ListContainersRequest {
            user: user.clone(),
            ..Default::default()
        }),
    );
    let containers = match containers.await {
        Ok(Ok(reply)) => reply.into_inner().containers,
        _ => Vec::new(),
    };
    page(
        StatusCode::OK,
        pages::portal(
            &format!("{}{port}", web.domain),
            &user,
            &services,
            &containers,
            &web.sealer.form_token(value),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_goes_on_to_this_site_only() {
        for ok in [
            "/",
            "/s/8080-alice/?q=1",
            "https://lab.test/",
            "https://8080-alice.lab.test:8443/x",
        ] {
            assert_eq!(safe_next("lab.test", ok), ok);
        }
        for elsewhere in [
            "//evil.example/",
            "https://evil.example/",
            "https://lab.test.evil.example/",
            "https://evillab.test/",
            "javascript:alert(1)",
            "http://lab.test/",
            "https://evil.example\\.lab.test/",
            "/\\evil.example/",
            "https://evil.example@x.lab.test/",
            "/\nx",
            "",
        ] {
            assert_eq!(safe_next("lab.test", elsewhere), "/", "{elsewhere}");
        }
    }
}
