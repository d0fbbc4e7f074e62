//! Which compressions each mode and optimizer accept: the table in
//! docs/jobs.md, checked at submit so a job that cannot train as written
//! is refused by name instead of training badly.

use crate::compress::Compression;
use crate::optim::{OptimizerConfig, OptimizerKind};

use super::{KeyError, Mode};

impl Mode {
    /// Checks a stage's push and fetch compression against the mode and
    /// the stage's optimizer.
    pub fn check_compression(
        self,
        optimizer: &OptimizerConfig,
        push: Compression,
        fetch: Compression,
    ) -> Result<(), KeyError> {
        let refuse = |key: &'static str, c: Compression, allowed: String| KeyError {
            key,
            value: format!("{:?}", c.name()),
            allowed,
        };
        if fetch == Compression::Topk {
            return Err(refuse(
                "fetch_compression",
                fetch,
                "parameters are fetched whole: none, fp16 or bf16".into(),
            ));
        }
        if push != Compression::Topk {
            return Ok(());
        }
        if matches!(self, Mode::Average | Mode::Easgd) {
            return Err(refuse(
                "compression",
                push,
                format!(
                    "mode = {:?} pushes whole models, which top-k would cut: use fp16 or bf16",
                    self.name()
                ),
            ));
        }
        if matches!(optimizer.kind, OptimizerKind::Adarevision | OptimizerKind::Dcasgd) {
            return Err(refuse(
                "compression",
                push,
                format!(
                    "optimizer kind {:?} needs every value of every gradient: use fp16 or bf16",
                    format!("{:?}", optimizer.kind).to_lowercase()
                ),
            ));
        }
        if self.server_momentum() && optimizer.nesterov == Some(true) {
            return Err(refuse(
                "compression",
                push,
                "top-k's momentum correction is plain momentum: set optimizer.nesterov = false".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_refuses_what_cannot_train() {
        let sgd = OptimizerConfig::default();
        let check = |mode: Mode, o: &OptimizerConfig, push| mode.check_compression(o, push, Compression::None);
        for mode in [Mode::Async, Mode::Sync, Mode::Ssp, Mode::Average, Mode::Easgd] {
            for c in [Compression::None, Compression::Fp16, Compression::Bf16] {
                assert!(check(mode, &sgd, c).is_ok(), "{mode:?} {c:?}");
                assert!(mode.check_compression(&sgd, Compression::None, c).is_ok());
            }
            let topk = check(mode, &sgd, Compression::Topk);
            assert_eq!(topk.is_ok(), !matches!(mode, Mode::Average | Mode::Easgd), "{mode:?}");
            let fetch = mode.check_compression(&sgd, Compression::None, Compression::Topk);
            assert_eq!(fetch.unwrap_err().key, "fetch_compression");
        }
        for kind in [OptimizerKind::Adarevision, OptimizerKind::Dcasgd] {
            let o = OptimizerConfig { kind, ..sgd };
            let e = check(Mode::Async, &o, Compression::Topk).unwrap_err();
            assert!(e.allowed.contains("every value"), "{}", e.allowed);
            assert!(check(Mode::Async, &o, Compression::Fp16).is_ok());
        }
        let nesterov = OptimizerConfig {
            momentum: Some(0.9),
            nesterov: Some(true),
            ..sgd
        };
        assert!(check(Mode::Sync, &nesterov, Compression::Topk).is_err());
        assert!(check(Mode::Async, &nesterov, Compression::Topk).is_ok());
    }
}
