//! Names a student types: `ssh alice+gpu@lab`.

use labssh_proxy::login_name::{valid_environment, valid_user, LoginName, ENV_SEPARATOR};

/// A login name parses only into a valid user and environment, and exactly: the parts
/// put back together are the name given, so nothing is trimmed, folded or dropped on
/// the way to a container name.
pub fn login_name(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(login) = LoginName::parse(text) else {
        return;
    };
    assert!(valid_user(&login.user), "{text:?} gave user {:?}", login.user);
    let rebuilt = match &login.environment {
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
