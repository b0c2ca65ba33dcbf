//! What every subcommand does first, before anything is measured.

use std::sync::Arc;

use crate::args::CommonArgs;
use crate::client::Endpoint;
use crate::target::Target;

/// Checks the target names, prepares the output directory and resolves
/// each target (address, credentials).
pub async fn prepare(common: &CommonArgs) -> anyhow::Result<Vec<Arc<Endpoint>>> {
    check_unique_names(&common.targets)?;
    if let Some(dir) = &common.out {
        crate::output::prepare(dir)?;
    }
    let mut endpoints = Vec::new();
    for target in &common.targets {
        endpoints.push(Arc::new(
            Endpoint::prepare(target, common.phase_timeout).await?,
        ));
    }
    Ok(endpoints)
}

/// Rejects two targets with one name: results are keyed by it.
fn check_unique_names(targets: &[Target]) -> anyhow::Result<()> {
    for (i, target) in targets.iter().enumerate() {
        if targets[..i].iter().any(|t| t.name == target.name) {
            anyhow::bail!("--target: the name '{}' is used twice", target.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_targets_may_not_share_a_name() {
        let a = crate::target::parse("a=127.0.0.1:22,user=root,password=x").unwrap();
        let b = crate::target::parse("b=127.0.0.1:22,user=root,password=x").unwrap();
        assert!(check_unique_names(&[a.clone(), b.clone()]).is_ok());
        let err = check_unique_names(&[a.clone(), b, a]).unwrap_err();
        assert_eq!(err.to_string(), "--target: the name 'a' is used twice");
    }
}
