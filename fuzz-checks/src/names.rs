//! What reaches the proxy before anyone logged in: the balancer's PROXY header, and
//! the login name a student types (`ssh alice+gpu@lab`).

use labssh_proxy::login_name::{valid_environment, valid_user, LoginName, ENV_SEPARATOR};
use labssh_proxy::proxy_protocol::{self, Prefix};

/// A login name parses only into a valid user and environment, and exactly: the parts
/// put back together are the name given, so nothing is trimmed, folded or dropped on
/// the way to a container name. `alice+` is the self-service login: no environment.
pub fn login_name(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(login) = LoginName::parse(text) else {
        return;
    };
    assert!(
        valid_user(&login.user),
        "{text:?} gave user {:?}",
        login.user
    );
    let rebuilt = match &login.environment {
        _ if login.helpdesk => {
            assert_eq!(login.environment, None, "{text:?}");
            format!("{}{ENV_SEPARATOR}", login.user)
        }
        Some(env) => {
            assert!(valid_environment(env), "{text:?} gave environment {env:?}");
            format!("{}{ENV_SEPARATOR}{env}", login.user)
        }
        None => login.user.clone(),
    };
    assert_eq!(rebuilt, text);
    assert!(
        login.user.is_ascii() && !login.user.contains(['/', '.', ' ']),
        "{text:?} gave user {:?}",
        login.user
    );
}

/// The first bytes of a connection from a trusted balancer: judged as not a header,
/// part of one, or a header of a bounded length; a whole header decodes to a client
/// address or a reason, and a decoded address written back as a header decodes alike.
pub fn proxy_header(data: &[u8]) {
    let Prefix::Header(len) = proxy_protocol::prefix(data) else {
        return;
    };
    let Ok(len) = len else {
        return;
    };
    assert!(len >= 16, "{len}");
    let Some(header) = data.get(..len) else {
        return;
    };
    let Ok(Some(client)) = proxy_protocol::decode(header) else {
        return;
    };
    let again = proxy_protocol::encode(client);
    assert_eq!(
        proxy_protocol::prefix(&again),
        Prefix::Header(Ok(again.len()))
    );
    assert_eq!(proxy_protocol::decode(&again), Ok(Some(client)));
}
