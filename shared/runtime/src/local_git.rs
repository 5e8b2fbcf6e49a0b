//! The `Scm` port over a local git repository, through the `git` CLI.
//!
//! Refs are resolved by one `git cat-file --batch-check` process kept running per repository
//! (a line written and one read per ref, not a process; `UnknownRef` names the first missing).
//! Simulation: `git merge-tree --write-tree --name-only` merges the two commits in memory (exit 1 lists the conflicted paths). Files
//! changed are counted from the merge base (`git diff --name-only target...head`), not as a
//! diff of the two tips, so the target's own later changes are not the intent's.
//! Co-change history: file pairs changed together in the last commits (at least twice, the 50
//! most frequent), like the reference's archaeology.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use converge_core::Intent;
use converge_core::pipeline::{
    MergeError, MergePermit, Merger, Scm, ScmError, SimulatedMerge, Tips,
};
use converge_core::risk::CouplingPair;
use converge_core::simulation::Simulation;
use converge_core::train::{Build, MergeMethod};

/// Commits of history read for co-changes.
const HISTORY_COMMITS: usize = 200;
/// Co-change pairs kept (the most frequent).
const COUPLING_PAIRS: usize = 50;
/// Fewest co-changes for a pair to count.
const MIN_CO_CHANGES: u64 = 2;

/// Results remembered per cache (the most recent first out when full).
const REMEMBERED: usize = 64;
/// How long the ref resolver may take to answer a batch before it is given up.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A git repository on this machine.
///
/// Each git process costs milliseconds, and a round spends most of its time in them, so what
/// cannot change is remembered: the tree `merge-tree` wrote for a (target, head) pair of
/// commits (the merge writes that same tree), and the co-change pairs of a target commit.
/// Both are keyed by commit ids, so a moved branch is never answered from the cache (a
/// remembered tree that `git gc` pruned before its merge is written again).
#[derive(Debug, Clone)]
pub struct GitScm {
    repo: PathBuf,
    merge_trees: Arc<Memory<(String, String), String>>,
    co_changes: Arc<Memory<String, Vec<CouplingPair>>>,
    layout: Arc<OnceLock<Layout>>,
    resolver: Arc<RefResolver>,
}

/// A small first-in-first-out memory of results, shared by the clones of a `GitScm`.
#[derive(Debug)]
struct Memory<K, V> {
    entries: Mutex<VecDeque<(K, V)>>,
}

impl<K: PartialEq, V: Clone> Memory<K, V> {
    fn new() -> Memory<K, V> {
        Memory {
            entries: Mutex::new(VecDeque::with_capacity(REMEMBERED)),
        }
    }

    fn recall(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn remember(&self, key: K, value: V) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.iter().any(|(k, _)| *k == key) {
            return;
        }
        if entries.len() == REMEMBERED {
            entries.pop_front();
        }
        entries.push_back((key, value));
    }

    fn forget(&self, key: &K) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|(k, _)| k != key);
        }
    }
}

/// Where the repository keeps its administrative files, read once.
#[derive(Debug)]
struct Layout {
    /// The common git directory (shared by every work tree).
    common_dir: PathBuf,
    /// The main work tree, whose HEAD is the common directory's; `None` for a bare
    /// repository (its HEAD is no work tree's), whichever work tree we were pointed at.
    main_work_tree: Option<String>,
}

impl GitScm {
    /// The repository at `repo` (its work tree or `.git` folder).
    pub fn new(repo: impl Into<PathBuf>) -> GitScm {
        GitScm {
            repo: repo.into(),
            merge_trees: Arc::new(Memory::new()),
            co_changes: Arc::new(Memory::new()),
            layout: Arc::new(OnceLock::new()),
            resolver: Arc::new(RefResolver::default()),
        }
    }

    /// The repository's path, as given.
    pub fn path(&self) -> &std::path::Path {
        &self.repo
    }

    async fn git(&self, args: &[&str]) -> Result<(i32, String), ScmError> {
        self.git_with(args, &[]).await
    }

    async fn git_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(i32, String), ScmError> {
        let output = tokio::process::Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .envs(env.iter().copied())
            .output()
            .await
            .map_err(|e| ScmError::Unavailable(format!("cannot run git: {e}")))?;
        let code = output.status.code().unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    /// The full name of a target branch (`main` → `refs/heads/main`).
    fn branch_ref(target: &str) -> String {
        if target.starts_with("refs/") {
            target.to_owned()
        } else {
            format!("refs/heads/{target}")
        }
    }

    async fn layout(&self) -> Result<&Layout, ScmError> {
        if let Some(layout) = self.layout.get() {
            return Ok(layout);
        }
        let (code, out) = self
            .git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .await?;
        let common_dir = out.lines().next().map(str::trim).unwrap_or_default();
        if code != 0 || common_dir.is_empty() {
            return Err(ScmError::Unavailable(format!(
                "{} is not a git repository (git rev-parse exited with {code})",
                self.repo.display()
            )));
        }
        // The first entry is the main work tree, marked `bare` when there is none (what
        // `rev-parse --is-bare-repository` does not say from inside a linked work tree).
        let (_, list) = self.git(&["worktree", "list", "--porcelain"]).await?;
        let main = list.split("\n\n").next().unwrap_or_default();
        let main_work_tree = main
            .lines()
            .find_map(|line| line.strip_prefix("worktree "))
            .filter(|_| !main.lines().any(|line| line == "bare"))
            .map(str::to_owned);
        let layout = Layout {
            common_dir: PathBuf::from(common_dir),
            main_work_tree,
        };
        Ok(self.layout.get_or_init(|| layout))
    }

    /// The work tree that has `branch` checked out, if any: moving the ref under it would
    /// leave that work tree showing the merge as reverted changes. Read from the HEAD files
    /// of the repository and of each linked work tree (what `git worktree list` reads), so
    /// a merge spends no process on it.
    async fn checked_out_at(&self, branch: &str) -> Result<Option<String>, ScmError> {
        let layout = self.layout().await?;
        let names = |head: &std::path::Path| {
            std::fs::read_to_string(head)
                .ok()
                .is_some_and(|text| text.trim().strip_prefix("ref: ") == Some(branch))
        };
        if let Some(main) = &layout.main_work_tree
            && names(&layout.common_dir.join("HEAD"))
        {
            return Ok(Some(main.clone()));
        }
        let Ok(linked) = std::fs::read_dir(layout.common_dir.join("worktrees")) else {
            return Ok(None);
        };
        for entry in linked.flatten() {
            if names(&entry.path().join("HEAD")) {
                // `gitdir` names the work tree's `.git` file.
                let path = std::fs::read_to_string(entry.path().join("gitdir"))
                    .map(|p| p.trim().trim_end_matches("/.git").to_owned())
                    .unwrap_or_else(|_| entry.path().display().to_string());
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// Why a simulation's git `command` failed: most often, the two commits share no history
    /// (asked only then, so a simulation that works spends no process on it).
    async fn failure_of(
        &self,
        intent: &Intent,
        command: &str,
        code: i32,
        target_sha: &str,
        head_sha: &str,
    ) -> ScmError {
        match self.git(&["merge-base", target_sha, head_sha]).await {
            Ok((1, _)) => ScmError::Unavailable(format!(
                "{} and {} share no history",
                intent.source, intent.target
            )),
            Ok(_) => ScmError::Unavailable(format!("git {command} failed with status {code}")),
            Err(e) => e,
        }
    }

    /// Resolves refs to commits through the repository's resolver (`cat-file --batch-check`,
    /// which reads names the way `rev-parse` does): `None` for a name that is no commit.
    async fn resolve_many(&self, references: &[&str]) -> Result<Vec<Option<String>>, ScmError> {
        let usable = |r: &str| {
            !r.is_empty() && !r.starts_with('-') && !r.contains(|c: char| c.is_whitespace())
        };
        let names: Vec<String> = references
            .iter()
            .filter(|r| usable(r))
            .map(|r| format!("{r}^{{commit}}"))
            .collect();
        let mut answers = if names.is_empty() {
            Vec::new()
        } else {
            self.resolver.resolve(&self.repo, &names).await?
        }
        .into_iter();
        Ok(references
            .iter()
            .map(|r| {
                if usable(r) {
                    answers.next().flatten()
                } else {
                    None
                }
            })
            .collect())
    }

    /// Resolves two refs to commits.
    async fn resolve_both(&self, first: &str, second: &str) -> Result<(String, String), ScmError> {
        let resolved = self.resolve_many(&[first, second]).await?;
        pair_of(first, second, &resolved)
    }

    async fn resolve(&self, reference: &str) -> Result<String, ScmError> {
        self.resolve_many(&[reference])
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| ScmError::UnknownRef(reference.to_owned()))
    }
}

/// One `git cat-file --batch-check` process kept running for a repository: resolving refs
/// costs a line written and one read each, not a process (a round resolves several per
/// intent). git reads a ref afresh for every line, so a branch moved, packed or deleted since
/// the process started is seen at once. A process that fails, times out or is abandoned half
/// way (its caller gave up) is dropped, killed, and replaced on the next call.
#[derive(Debug, Default)]
struct RefResolver {
    /// `None` while a caller holds the process, and after one failed.
    process: tokio::sync::Mutex<Option<BatchCheck>>,
}

impl RefResolver {
    /// The commit of each of `names` (no whitespace in them), in order.
    async fn resolve(
        &self,
        repo: &Path,
        names: &[String],
    ) -> Result<Vec<Option<String>>, ScmError> {
        let mut slot = self.process.lock().await;
        // Taken out of its slot while asked: if this call is dropped half way, so is the
        // process, and no later caller reads answers meant for this one.
        if let Some(mut process) = slot.take() {
            match ask_within(&mut process, names).await {
                Ok(answers) => {
                    *slot = Some(process);
                    return Ok(answers);
                }
                // It may have died since it last answered: one fresh replacement.
                Err(e) => tracing::debug!("the ref resolver failed, starting another: {e}"),
            }
        }
        let mut process = BatchCheck::spawn(repo)?;
        let answers = ask_within(&mut process, names).await?;
        *slot = Some(process);
        Ok(answers)
    }
}

/// Asks `process` for `names`, giving up after [`RESOLVE_TIMEOUT`].
async fn ask_within(
    process: &mut BatchCheck,
    names: &[String],
) -> Result<Vec<Option<String>>, ScmError> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, process.ask(names)).await {
        Ok(Ok(answers)) => Ok(answers),
        Ok(Err(e)) => Err(ScmError::Unavailable(format!("git cat-file failed: {e}"))),
        Err(_) => Err(ScmError::Unavailable(format!(
            "git cat-file did not answer within {} s",
            RESOLVE_TIMEOUT.as_secs()
        ))),
    }
}

/// A running `git cat-file --batch-check`, each answer tagged with its question's position.
#[derive(Debug)]
struct BatchCheck {
    /// Killed when dropped.
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl BatchCheck {
    fn spawn(repo: &Path) -> Result<BatchCheck, ScmError> {
        let cannot =
            |e: &dyn std::fmt::Display| ScmError::Unavailable(format!("cannot run git: {e}"));
        let mut child = tokio::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            // `%(rest)` echoes what follows the name on its line: the question's position.
            .args([
                "cat-file",
                "--batch-check=%(objectname) %(objecttype) %(rest)",
            ])
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| cannot(&e))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(cannot(&"no pipes to git cat-file"));
        };
        Ok(BatchCheck {
            _child: child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout),
        })
    }

    /// Asks for `names` and reads one answer each: the commit, `None` for a name that is no
    /// commit. An answer out of step with its question is an error (the process is not
    /// trusted again).
    async fn ask(&mut self, names: &[String]) -> std::io::Result<Vec<Option<String>>> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut questions = String::new();
        for (position, name) in names.iter().enumerate() {
            questions.push_str(&format!("{name} {position}\n"));
        }
        let BatchCheck { stdin, stdout, .. } = self;
        // Written while the answers are read, so neither pipe can fill up and stall git.
        let write = async {
            stdin.write_all(questions.as_bytes()).await?;
            stdin.flush().await
        };
        let read = async {
            let mut answers = Vec::with_capacity(names.len());
            let mut line = String::new();
            for (position, name) in names.iter().enumerate() {
                line.clear();
                if stdout.read_line(&mut line).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "git cat-file stopped",
                    ));
                }
                answers.push(batch_answer(line.trim_end(), name, position)?);
            }
            Ok(answers)
        };
        // The first failure ends both: a reader that gave up on an answer out of step must not
        // leave the writer blocked on a pipe git no longer reads.
        let ((), answers) = tokio::try_join!(write, read)?;
        Ok(answers)
    }
}

/// Reads one line of [`BatchCheck`]'s output for the question `name` at `position`: a commit
/// (`<id> commit <position>`), or `None` for another object or a name that resolves to none
/// (`<name> missing`, `<name> ambiguous`).
fn batch_answer(line: &str, name: &str, position: usize) -> std::io::Result<Option<String>> {
    let mut fields = line.split(' ');
    let out_of_step = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("git cat-file answered '{line}' to '{name}'"),
        )
    };
    match (fields.next(), fields.next(), fields.next()) {
        (Some(id), Some(kind), Some(tag)) if is_object_id(id) => {
            if tag != position.to_string() {
                return Err(out_of_step());
            }
            Ok((kind == "commit").then(|| id.to_owned()))
        }
        (Some(asked), Some("missing" | "ambiguous"), None) if asked == name => Ok(None),
        _ => Err(out_of_step()),
    }
}

/// The commits of two refs as `resolve_many` answered them, or the first that is unknown.
fn pair_of(
    first: &str,
    second: &str,
    resolved: &[Option<String>],
) -> Result<(String, String), ScmError> {
    match resolved {
        [Some(a), Some(b)] => Ok((a.clone(), b.clone())),
        [None, _] => Err(ScmError::UnknownRef(first.to_owned())),
        _ => Err(ScmError::UnknownRef(second.to_owned())),
    }
}

/// A full commit id (SHA-1 or SHA-256).
fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Scm for GitScm {
    async fn conflicts_between(
        &self,
        _sample: &Intent,
        first: &str,
        second: &str,
    ) -> Result<Vec<String>, ScmError> {
        let (code, out) = self
            .git(&[
                "merge-tree",
                "--write-tree",
                "--name-only",
                "--no-messages",
                first,
                second,
            ])
            .await?;
        match code {
            0 => Ok(Vec::new()),
            1 => {
                let mut files: Vec<String> = lines(&out).into_iter().skip(1).collect();
                files.sort();
                files.dedup();
                Ok(files)
            }
            _ => Err(ScmError::Unavailable(format!(
                "git merge-tree of {first} and {second} failed with status {code}"
            ))),
        }
    }

    async fn read_file(
        &self,
        _sample: &Intent,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>, ScmError> {
        let (code, text) = self
            .git(&["cat-file", "blob", &format!("{commit}:{path}")])
            .await?;
        if code == 0 {
            return Ok(Some(text));
        }
        // git fails alike when the file is not there and when the commit is not (or the
        // repository is broken): only a commit that reads tells the file is absent. Taken for
        // "no file", a failure would drop the repository's configuration in force.
        let (commit_code, _) = self
            .git(&["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .await?;
        if commit_code == 0 {
            Ok(None)
        } else {
            Err(ScmError::Unavailable(format!(
                "{path} does not read at {commit}: the commit is not in the repository"
            )))
        }
    }

    async fn tips(&self, intent: &Intent) -> Result<Tips, ScmError> {
        let (head_sha, target_sha) = self.resolve_both(&intent.source, &intent.target).await?;
        Ok(Tips {
            head_sha,
            target_sha,
        })
    }

    /// Every intent's refs in one git process.
    async fn tips_of(&self, intents: &[Intent]) -> Option<Vec<Result<Tips, ScmError>>> {
        let names: Vec<&str> = intents
            .iter()
            .flat_map(|i| [i.source.as_str(), i.target.as_str()])
            .collect();
        let resolved = match self.resolve_many(&names).await {
            Ok(resolved) => resolved,
            Err(e) => return Some(intents.iter().map(|_| Err(e.clone())).collect()),
        };
        let tips = intents
            .iter()
            .zip(resolved.chunks(2))
            .map(|(intent, pair)| {
                pair_of(&intent.source, &intent.target, pair).map(|(head_sha, target_sha)| Tips {
                    head_sha,
                    target_sha,
                })
            })
            .collect();
        Some(tips)
    }

    async fn simulate(&self, intent: &Intent) -> Result<SimulatedMerge, ScmError> {
        let (head_sha, target_sha) = self.resolve_both(&intent.source, &intent.target).await?;
        let (code, out) = self
            .git(&[
                "merge-tree",
                "--write-tree",
                "--name-only",
                "--no-messages",
                &target_sha,
                &head_sha,
            ])
            .await?;
        let mut conflicts = match code {
            0 => {
                // The tree written is the one the merge commits: remembered for it.
                if let Some(tree) = out.lines().next().filter(|t| is_object_id(t.trim())) {
                    let key = (target_sha.clone(), head_sha.clone());
                    self.merge_trees.remember(key, tree.trim().to_owned());
                }
                Vec::new()
            }
            // First line: the tree written; then one conflicted path per line.
            1 => lines(&out).into_iter().skip(1).collect(),
            _ => {
                return Err(self
                    .failure_of(intent, "merge-tree", code, &target_sha, &head_sha)
                    .await);
            }
        };
        conflicts.sort();
        conflicts.dedup();
        // `target...head` diffs from their merge base.
        let (code, out) = self
            .git(&[
                "diff",
                "--name-only",
                "--no-renames",
                &format!("{target_sha}...{head_sha}"),
                "--",
            ])
            .await?;
        if code != 0 {
            return Err(self
                .failure_of(intent, "diff", code, &target_sha, &head_sha)
                .await);
        }
        let simulation = Simulation {
            mergeable: conflicts.is_empty(),
            conflicts,
            files_changed: lines(&out),
        };
        Ok(SimulatedMerge {
            simulation,
            head_sha,
            target_sha,
        })
    }

    async fn co_changes(
        &self,
        intent: &Intent,
        _files: &[String],
    ) -> Result<Vec<CouplingPair>, ScmError> {
        let max = format!("--max-count={HISTORY_COMMITS}");
        let target = self.resolve(&intent.target).await?;
        if let Some(pairs) = self.co_changes.recall(&target) {
            return Ok(pairs);
        }
        let (code, out) = self
            .git(&["log", &max, "--format=%x00", "--name-only", &target])
            .await?;
        if code != 0 {
            return Ok(Vec::new());
        }
        let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
        for commit in out.split('\0') {
            let mut files = lines(commit);
            files.sort();
            files.dedup();
            for (i, a) in files.iter().enumerate() {
                for b in &files[i + 1..] {
                    *pairs.entry((a.clone(), b.clone())).or_default() += 1;
                }
            }
        }
        let mut frequent: Vec<((String, String), u64)> = pairs
            .into_iter()
            .filter(|(_, n)| *n >= MIN_CO_CHANGES)
            .collect();
        frequent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        frequent.truncate(COUPLING_PAIRS);
        let pairs: Vec<CouplingPair> = frequent
            .into_iter()
            .map(|((file_a, file_b), co_changes)| CouplingPair {
                file_a,
                file_b,
                co_changes,
                source: "git-log".to_owned(),
            })
            .collect();
        self.co_changes.remember(target, pairs.clone());
        Ok(pairs)
    }
}

/// Who the merge commits Converge writes are by (the repository's own identity is not
/// assumed to be configured).
const MERGE_IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "Converge"),
    ("GIT_AUTHOR_EMAIL", "converge@localhost"),
    ("GIT_COMMITTER_NAME", "Converge"),
    ("GIT_COMMITTER_EMAIL", "converge@localhost"),
];

impl GitScm {
    /// Writes the merge of the validated commits as a tree (a conflict writes nothing
    /// usable).
    async fn merge_tree(&self, validated: &SimulatedMerge) -> Result<String, MergeError> {
        let (code, out) = self
            .git(&[
                "merge-tree",
                "--write-tree",
                "--no-messages",
                &validated.target_sha,
                &validated.head_sha,
            ])
            .await
            .map_err(|e| MergeError::Unavailable(e.to_string()))?;
        match code {
            0 => Ok(out.trim().to_owned()),
            1 => Err(MergeError::Conflict(
                lines(&out).into_iter().skip(1).collect(),
            )),
            _ => Err(MergeError::Unavailable(format!(
                "git merge-tree failed with status {code}"
            ))),
        }
    }
}

impl Merger for GitScm {
    async fn landed(&self, intent: &Intent, head_sha: &str) -> Result<bool, MergeError> {
        let unavailable = |e: ScmError| MergeError::Unavailable(e.to_string());
        let target = self.resolve(&intent.target).await.map_err(unavailable)?;
        let (code, _) = self
            .git(&["merge-base", "--is-ancestor", head_sha, &target])
            .await
            .map_err(unavailable)?;
        Ok(code == 0)
    }

    /// Writes the merge commit of the validated head onto the validated target commit (no work
    /// tree involved), then moves the target branch with `update-ref` from the validated commit
    /// only: if anything moved the branch meanwhile, git refuses and nothing changes.
    async fn merge(
        &self,
        intent: &Intent,
        validated: &SimulatedMerge,
        // Proof that the caller holds the key's lease: required, not read (see `MergePermit`).
        _permit: &MergePermit,
    ) -> Result<String, MergeError> {
        let unavailable = |e: ScmError| MergeError::Unavailable(e.to_string());
        let branch = Self::branch_ref(&intent.target);
        let (current_target, current_head) = self
            .resolve_both(&branch, &intent.source)
            .await
            .map_err(unavailable)?;
        if current_target != validated.target_sha {
            return Err(MergeError::TargetMoved {
                validated: validated.target_sha.clone(),
                current: current_target,
            });
        }
        if current_head != validated.head_sha {
            return Err(MergeError::HeadMoved {
                validated: validated.head_sha.clone(),
                current: current_head,
            });
        }
        if let Some(path) = self.checked_out_at(&branch).await.map_err(unavailable)? {
            return Err(MergeError::Protected(format!(
                "{branch} is checked out in the work tree at {path}; Converge does not move a \
                 checked-out branch (check out another branch there, or use a bare clone)"
            )));
        }
        let pair = (validated.target_sha.clone(), validated.head_sha.clone());
        let remembered = self.merge_trees.recall(&pair);
        let tree = match &remembered {
            Some(tree) => tree.clone(),
            None => self.merge_tree(validated).await?,
        };
        let message = format!(
            "Merge {} into {} (Converge intent {})",
            intent.source, intent.target, intent.id
        );
        let commit_tree = |tree: String| {
            let message = message.clone();
            async move {
                self.git_with(
                    &[
                        "commit-tree",
                        &tree,
                        "-p",
                        &validated.target_sha,
                        "-p",
                        &validated.head_sha,
                        "-m",
                        &message,
                    ],
                    &MERGE_IDENTITY,
                )
                .await
                .map_err(unavailable)
            }
        };
        let (mut code, mut out) = commit_tree(tree).await?;
        if code != 0 && remembered.is_some() {
            // The remembered tree is unreachable until committed, and `git gc` may have
            // pruned it: write it again.
            self.merge_trees.forget(&pair);
            (code, out) = commit_tree(self.merge_tree(validated).await?).await?;
        }
        if code != 0 {
            return Err(MergeError::Unavailable(format!(
                "git commit-tree failed with status {code}"
            )));
        }
        let merge_commit = out.trim().to_owned();
        let (code, _) = self
            .git(&[
                "update-ref",
                "-m",
                &message,
                &branch,
                &merge_commit,
                &validated.target_sha,
            ])
            .await
            .map_err(unavailable)?;
        if code != 0 {
            // The only way a compare-and-swap on a ref fails here is that it moved.
            let current = self.resolve(&branch).await.unwrap_or_default();
            return Err(MergeError::TargetMoved {
                validated: validated.target_sha.clone(),
                current,
            });
        }
        Ok(merge_commit)
    }

    async fn target_tip(&self, sample: &Intent) -> Result<String, ScmError> {
        self.resolve(&Self::branch_ref(&sample.target)).await
    }

    async fn build_candidate(
        &self,
        _sample: &Intent,
        base: &str,
        intents: &[(String, String)],
        method: MergeMethod,
        trial_ref: &str,
    ) -> Result<Build, ScmError> {
        GitScm::build_candidate(self, base, intents, method, trial_ref).await
    }

    async fn fast_forward(
        &self,
        sample: &Intent,
        from: &str,
        to: &str,
        // Proof that the caller holds the key's lease: required, not read.
        _permit: &MergePermit,
    ) -> Result<(), MergeError> {
        GitScm::fast_forward(self, &sample.target, from, to).await
    }

    async fn drop_trial(&self, _sample: &Intent, trial_ref: &str) -> Result<(), ScmError> {
        GitScm::drop_trial(self, trial_ref).await
    }
}

/// Candidates of tested merges (`core::train`): built as commits under a trial ref, and
/// landed by fast-forwarding the target to exactly the commit that was tested.
impl GitScm {
    /// Writes `intents` (`(id, head)`, in order) onto `base` with `method`, points
    /// `trial_ref` at the result and answers its commit, or the first intent that does not
    /// merge with its conflicting files (nothing is pointed at then).
    pub async fn build_candidate(
        &self,
        base: &str,
        intents: &[(String, String)],
        method: MergeMethod,
        trial_ref: &str,
    ) -> Result<Build, ScmError> {
        let mut tip = base.to_owned();
        for (position, (intent, head)) in intents.iter().enumerate() {
            let (code, out) = self
                .git(&[
                    "merge-tree",
                    "--write-tree",
                    "--name-only",
                    "--no-messages",
                    &tip,
                    head,
                ])
                .await?;
            let tree = match code {
                0 => out.trim().to_owned(),
                1 => {
                    let mut files: Vec<String> = lines(&out).into_iter().skip(1).collect();
                    files.sort();
                    files.dedup();
                    return Ok(Build::Conflict {
                        intent: intent.clone(),
                        files,
                    });
                }
                _ => {
                    return Err(ScmError::Unavailable(format!(
                        "git merge-tree of {intent} onto its candidate failed with status {code}"
                    )));
                }
            };
            tip = match method {
                MergeMethod::Merge => {
                    let message = format!("Merge Converge intent {intent}");
                    self.commit_tree(&tree, &[&tip, head], &message).await?
                }
                MergeMethod::Squash => {
                    let message = format!("Converge intent {intent} (squashed)");
                    self.commit_tree(&tree, &[&tip], &message).await?
                }
                MergeMethod::Rebase => {
                    // `git replay` answers for branches only: a short-lived one names the head.
                    let branch = format!("{trial_ref}-replay-{position}");
                    self.replay(&tip, head, &branch, intent).await?
                }
            };
        }
        let (code, _) = self.git(&["update-ref", trial_ref, &tip]).await?;
        if code != 0 {
            return Err(ScmError::Unavailable(format!(
                "git update-ref {trial_ref} failed with status {code}"
            )));
        }
        Ok(Build::Built(tip))
    }

    /// Moves `branch` from `from` to `to` if it is still at `from` and `to` descends from it
    /// (a fast-forward); `MergeError::TargetMoved` names where it is otherwise.
    pub async fn fast_forward(&self, branch: &str, from: &str, to: &str) -> Result<(), MergeError> {
        let unavailable = |e: ScmError| MergeError::Unavailable(e.to_string());
        let branch = Self::branch_ref(branch);
        let (code, _) = self
            .git(&["merge-base", "--is-ancestor", from, to])
            .await
            .map_err(unavailable)?;
        if code != 0 {
            return Err(MergeError::Unavailable(format!(
                "{to} does not descend from {from}: not a fast-forward"
            )));
        }
        if let Some(path) = self.checked_out_at(&branch).await.map_err(unavailable)? {
            return Err(MergeError::Protected(format!(
                "{branch} is checked out in the work tree at {path}; Converge does not move a \
                 checked-out branch"
            )));
        }
        let message = format!("Converge: fast-forward to the tested {to}");
        let (code, _) = self
            .git(&["update-ref", "-m", &message, &branch, to, from])
            .await
            .map_err(unavailable)?;
        if code != 0 {
            let current = self.resolve(&branch).await.unwrap_or_default();
            return Err(MergeError::TargetMoved {
                validated: from.to_owned(),
                current,
            });
        }
        Ok(())
    }

    /// Deletes a trial ref (a missing one is not an error).
    pub async fn drop_trial(&self, trial_ref: &str) -> Result<(), ScmError> {
        self.git(&["update-ref", "-d", trial_ref]).await.map(|_| ())
    }

    async fn commit_tree(
        &self,
        tree: &str,
        parents: &[&str],
        message: &str,
    ) -> Result<String, ScmError> {
        let mut args = vec!["commit-tree", tree];
        for parent in parents {
            args.extend(["-p", parent]);
        }
        args.extend(["-m", message]);
        let (code, out) = self.git_with(&args, &MERGE_IDENTITY).await?;
        let commit = out.trim();
        if code != 0 || !is_object_id(commit) {
            return Err(ScmError::Unavailable(format!(
                "git commit-tree failed with status {code}"
            )));
        }
        Ok(commit.to_owned())
    }

    /// The head's own commits (since its merge base with `onto`) replayed onto `onto`,
    /// through the short-lived `branch` (a `refs/heads/` name), deleted afterwards.
    async fn replay(
        &self,
        onto: &str,
        head: &str,
        branch: &str,
        intent: &str,
    ) -> Result<String, ScmError> {
        let (code, base) = self.git(&["merge-base", onto, head]).await?;
        if code != 0 {
            return Err(ScmError::Unavailable(format!(
                "intent {intent}'s head shares no history with its candidate"
            )));
        }
        let (code, _) = self.git(&["update-ref", branch, head]).await?;
        if code != 0 {
            return Err(ScmError::Unavailable(format!(
                "git update-ref {branch} failed with status {code}"
            )));
        }
        let range = format!("{}..{branch}", base.trim());
        let replayed = self
            .git_with(&["replay", "--onto", onto, &range], &MERGE_IDENTITY)
            .await;
        self.git(&["update-ref", "-d", branch]).await?;
        let (code, out) = replayed?;
        if code != 0 {
            return Err(ScmError::Unavailable(format!(
                "git replay of intent {intent} failed with status {code}"
            )));
        }
        // `update <branch> <new> <old>`; with no commits of its own, nothing: the base.
        Ok(out
            .lines()
            .filter_map(|line| line.split_whitespace().nth(2))
            .next_back()
            .map_or_else(|| onto.to_owned(), str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::batch_answer;

    const ID: &str = "0b6581000b69585a48bd9b7f232966f4f1b96143";

    #[test]
    fn a_resolver_answer_must_be_the_one_to_its_question() {
        let name = "refs/heads/main^{commit}";
        let at = |line: &str, position| batch_answer(line, name, position).ok();
        assert_eq!(at(&format!("{ID} commit 3"), 3), Some(Some(ID.to_owned())));
        assert_eq!(at(&format!("{ID} tree 3"), 3), Some(None), "no commit");
        assert_eq!(at(&format!("{name} missing"), 0), Some(None));
        assert_eq!(at(&format!("{name} ambiguous"), 0), Some(None));
        // Out of step: another question's answer is an error, never a wrong commit.
        assert_eq!(at(&format!("{ID} commit 2"), 3), None);
        assert_eq!(at("refs/heads/other^{commit} missing", 0), None);
        assert_eq!(at("fatal: something", 0), None);
        assert_eq!(at("", 0), None);
    }
}
