//! Range checks of a parsed job, with errors naming the key and what is
//! allowed.

use super::check::Check;
use super::{DataFormat, JobError, JobSpec, LabelColumn, kinds};
use crate::compress::Compression;
use crate::optim::OptimError;

impl JobSpec {
    /// Checks `[data]`: keys that belong to the format, sizes in range.
    fn validate_data(&self, origin: &str) -> Result<(), JobError> {
        let d = &self.data;
        let invalid = |key: &str, value: String, allowed: String| JobError::Invalid {
            origin: origin.to_string(),
            key: format!("data.{key}"),
            value,
            allowed,
        };
        let format = d.format.name();
        let mnist = d.format == DataFormat::Mnist;
        let (max_train, max_test) = if mnist { (60_000, 10_000) } else { (u32::MAX, u32::MAX) };
        if let Some(n) = d.train_examples
            && !(d.partitions..=max_train).contains(&n)
        {
            let allowed = format!("must be between {} and {max_train}", d.partitions);
            return Err(invalid("train_examples", n.to_string(), allowed));
        }
        if let Some(n) = d.test_examples
            && !(1..=max_test).contains(&n)
        {
            return Err(invalid(
                "test_examples",
                n.to_string(),
                format!("must be between 1 and {max_test}"),
            ));
        }
        match (&d.path, mnist) {
            (Some(p), true) => {
                let allowed = "MNIST is built in (found under --data-dir or fetched): set `format` to idx, csv, npy, parquet or arrow for files of your own";
                return Err(invalid("path", format!("{p:?}"), allowed.into()));
            }
            (None, false) => {
                let allowed = format!("format = \"{format}\" needs the path of its files");
                return Err(invalid("path", "nothing".into(), allowed));
            }
            _ => {}
        }
        if d.header.is_some() && d.format != DataFormat::Csv {
            let allowed = format!("only for format = \"csv\", not \"{format}\"");
            return Err(invalid("header", "a value".into(), allowed));
        }
        let columnar = matches!(d.format, DataFormat::Parquet | DataFormat::Arrow);
        match &d.label_column {
            Some(_) if !columnar && d.format != DataFormat::Csv => {
                let allowed = format!("only for format = \"csv\", \"parquet\" or \"arrow\", not \"{format}\"");
                return Err(invalid("label_column", "a value".into(), allowed));
            }
            Some(LabelColumn::Index(i)) if columnar => {
                let allowed = format!("a column's name: {format} columns are named");
                return Err(invalid("label_column", i.to_string(), allowed));
            }
            _ => {}
        }
        for (key, given) in [("classes", d.classes.is_some()), ("scale", d.scale.is_some())] {
            if given && mnist {
                return Err(invalid(
                    key,
                    "a value".into(),
                    "MNIST's classes and scaling are fixed".into(),
                ));
            }
        }
        if let Some(c) = d.classes
            && !(2..=256).contains(&c)
        {
            return Err(invalid("classes", c.to_string(), "must be between 2 and 256".into()));
        }
        if d.shared && mnist {
            let allowed = "MNIST is found or fetched by the driver; `shared` is for files of your own".into();
            return Err(invalid("shared", "true".into(), allowed));
        }
        if let Some(shape) = &d.shape
            && (shape.len() != 3 || shape.iter().any(|n| !(1..=65_536).contains(n)))
        {
            let allowed = "[channels, height, width], each 1 to 65536".into();
            return Err(invalid("shape", format!("{shape:?}"), allowed));
        }
        if d.validation == Some(0) {
            return Err(invalid(
                "validation",
                "0".into(),
                "must be at least 1 (or left out)".into(),
            ));
        }
        Ok(())
    }

    /// Checks every range; the first violation is reported.
    pub fn validate(&self, origin: &str) -> Result<(), JobError> {
        let c = Check::new(origin);
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(c.invalid(
                "name",
                format!("{:?}", self.name),
                "1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        c.in_range("data.partitions", self.data.partitions.into(), 1, 4096)?;
        self.validate_data(origin)?;
        match kinds::kind(&self.model.kind) {
            Some(kind) => kind.check(self, origin)?,
            None => {
                let known = kinds::names().join(", ");
                return Err(c.invalid(
                    "model.kind",
                    format!("{:?}", self.model.kind),
                    &format!("not a model kind this build knows: {known}"),
                ));
            }
        }
        self.validate_train(&c)?;
        self.optimizer.validate().map_err(|e| match e {
            OptimError::BadSetting { key, value, allowed } => {
                c.invalid(&format!("optimizer.{key}"), value.to_string(), allowed)
            }
            OptimError::NotFor { key, kind } => c.invalid(
                &format!("optimizer.{key}"),
                "(set)".into(),
                &format!("does not apply to kind = {:?}", format!("{kind:?}").to_lowercase()),
            ),
            other => c.invalid("optimizer", String::new(), &other.to_string()),
        })
    }

    /// Checks `train.compression` and its keys against the mode and every
    /// stage's optimizer.
    fn validate_compression(&self, c: &Check) -> Result<(), JobError> {
        let t = &self.train;
        let topk = t.compression == Compression::Topk;
        let not_topk = "applies to compression = \"topk\" only";
        if let Some(f) = t.topk_fraction {
            if !topk {
                return Err(c.invalid("train.topk_fraction", f.to_string(), not_topk));
            }
            if !(f > 0.0 && f <= 1.0) {
                return Err(c.invalid("train.topk_fraction", f.to_string(), "must be in (0, 1]"));
            }
        }
        if let Some(n) = t.topk_clip_norm {
            if !topk {
                return Err(c.invalid("train.topk_clip_norm", n.to_string(), not_topk));
            }
            if !(n.is_finite() && n > 0.0) {
                return Err(c.invalid("train.topk_clip_norm", n.to_string(), "must be a positive number"));
            }
        }
        for stage in self.stages() {
            t.mode
                .check_compression(&stage.optimizer, t.compression, t.fetch_compression)
                .map_err(|e| c.invalid(&format!("train.{}", e.key), e.value, &e.allowed))?;
        }
        Ok(())
    }

    /// Checks `[train]`: epochs, minibatch, the mode's own keys, the target.
    fn validate_train(&self, c: &Check) -> Result<(), JobError> {
        let t = &self.train;
        c.in_range("train.epochs", t.epochs.into(), 1, 10_000)?;
        c.in_range("train.batch_size", t.batch_size.into(), 1, 65_536)?;
        c.in_range("train.reference_executors", t.reference_executors.into(), 1, 4096)?;
        for (key, n) in [("train.n_push", t.n_push), ("train.n_fetch", t.n_fetch)] {
            if let Some(n) = n {
                c.in_range(key, n.into(), 1, 1000)?;
            }
        }
        if let Some(w) = t.push_warmup {
            c.in_range("train.push_warmup", w.into(), 0, 1_000_000)?;
        }
        if let Some(d) = t.inject_delay {
            c.in_range("train.inject_delay", d.into(), 0, 100_000)?;
        }
        t.mode
            .check(&t.mode_keys())
            .map_err(|e| c.invalid(&format!("train.{}", e.key), e.value, &e.allowed))?;
        self.validate_compression(c)?;
        if let Some(a) = t.target_accuracy
            && !(a > 0.0 && a <= 1.0)
        {
            return Err(c.invalid("train.target_accuracy", a.to_string(), "must be in (0, 1]"));
        }
        if t.stop_at_target && t.target_accuracy.is_none() {
            return Err(c.invalid("train.stop_at_target", "true".into(), "needs train.target_accuracy"));
        }
        Ok(())
    }
}
