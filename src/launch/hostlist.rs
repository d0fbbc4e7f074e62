//! Slurm's compressed host lists (`node[01-04,07],login1`) and task counts
//! (`2(x3),1`), as in `SLURM_JOB_NODELIST` and `SLURM_STEP_TASKS_PER_NODE`.

use anyhow::{Context, bail};

/// Longest list expanded; a typo like `n[1-99999999]` is an error, not a hang.
const MAX_HOSTS: usize = 100_000;

/// Every host the list names, in order.
pub fn expand(list: &str) -> anyhow::Result<Vec<String>> {
    let mut hosts = Vec::new();
    for term in split_top_level(list)? {
        let mut expanded = vec![String::new()];
        let mut rest = term;
        while !rest.is_empty() {
            let (literal, range) = match rest.find('[') {
                Some(open) => {
                    let close = rest[open..].find(']').map(|c| open + c).context("an unclosed '['")?;
                    (&rest[..open], Some((&rest[open + 1..close], close + 1)))
                }
                None => (rest, None),
            };
            for host in &mut expanded {
                host.push_str(literal);
            }
            match range {
                Some((inside, next)) => {
                    let suffixes = expand_brackets(inside)?;
                    expanded = expanded
                        .iter()
                        .flat_map(|host| suffixes.iter().map(move |s| format!("{host}{s}")))
                        .collect();
                    anyhow::ensure!(expanded.len() <= MAX_HOSTS, "more than {MAX_HOSTS} hosts");
                    rest = &rest[next..];
                }
                None => rest = "",
            }
        }
        hosts.extend(expanded);
        anyhow::ensure!(hosts.len() <= MAX_HOSTS, "more than {MAX_HOSTS} hosts");
    }
    if hosts.is_empty() {
        bail!("no host in {list:?}");
    }
    Ok(hosts)
}

/// The comma-separated terms outside brackets.
fn split_top_level(list: &str) -> anyhow::Result<Vec<&str>> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).context("a ']' without its '['")?,
            ',' if depth == 0 => {
                terms.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    anyhow::ensure!(depth == 0, "an unclosed '[' in {list:?}");
    terms.push(&list[start..]);
    Ok(terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect())
}

/// `01-04,07` → `01 02 03 04 07` (a range keeps its first number's width).
fn expand_brackets(inside: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for part in inside.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| {
            s.parse::<u64>()
                .with_context(|| format!("{s:?} in [{inside}] is not a number"))
        };
        let (a, b) = (parse(lo)?, parse(hi)?);
        anyhow::ensure!(a <= b, "the range {part} in [{inside}] runs backwards");
        anyhow::ensure!(
            b - a < MAX_HOSTS as u64,
            "the range {part} names more than {MAX_HOSTS} hosts"
        );
        out.extend((a..=b).map(|n| format!("{n:0width$}", width = lo.len())));
    }
    Ok(out)
}

/// `2(x3),1` → `[2, 2, 2, 1]`: tasks on each node of the step, in node order.
pub fn tasks_per_node(spec: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (count, times) = match part.split_once("(x") {
            Some((count, times)) => (count, times.strip_suffix(')').context("an unclosed '(x'")?),
            None => (part, "1"),
        };
        let count = count
            .parse::<usize>()
            .with_context(|| format!("{part:?} is not a task count"))?;
        let times = times
            .parse::<usize>()
            .with_context(|| format!("{part:?} is not a task count"))?;
        anyhow::ensure!(times <= MAX_HOSTS, "{part:?} repeats more than {MAX_HOSTS} times");
        out.extend(std::iter::repeat_n(count, times));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_host_lists_expand_as_scontrol_show_hostnames_does() {
        assert_eq!(expand("vm").unwrap(), ["vm"]);
        assert_eq!(
            expand("node[01-04,07]").unwrap(),
            ["node01", "node02", "node03", "node04", "node07"]
        );
        assert_eq!(expand("a[1-2],b,c[9-10]").unwrap(), ["a1", "a2", "b", "c9", "c10"]);
        assert_eq!(
            expand("rack[1-2]-n[01-02]").unwrap(),
            ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]
        );
        assert_eq!(expand("gpu[008-010]").unwrap(), ["gpu008", "gpu009", "gpu010"]);
    }

    #[test]
    fn malformed_host_lists_are_errors() {
        for bad in ["", "node[01-04", "node01]", "n[4-1]", "n[a-b]", "n[1-99999999]"] {
            assert!(expand(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn task_counts_expand_per_node() {
        assert_eq!(tasks_per_node("3").unwrap(), [3]);
        assert_eq!(tasks_per_node("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert!(tasks_per_node("2(x3").is_err());
        assert!(tasks_per_node("x").is_err());
    }
}
