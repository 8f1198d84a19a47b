//! One collection run: the chunks of every `read-new` call in, the JSON array of `pg_log` items
//! out.
//!
//! Chunks of different files interleave, so the run keeps one parser per path; consecutive
//! chunks of a path continue each other, so an entry (or csvlog record) cut at the end of one
//! call is completed by the next. A chunk that does not start where the previous one of its
//! path ended (the host followed a rotation or truncation) ends the pending entry first.
//!
//! Each finished entry is filtered by `min_level` and serialised at once into the item of its
//! database, so the run holds JSON text rather than tens of thousands of structs. Nothing here
//! calls the host: the wasm glue feeds it, and the tests feed it real log files.

use crate::csv::CsvParser;
use crate::entry::Entry;
use crate::settings::{Format, Settings};
use crate::stderr::StderrParser;
use pganalytics_guest::Error;
use std::collections::BTreeMap;

/// Output bytes one byte of log may become. Measured on the real logs in tests/data: stderr
/// 1.5, csvlog 1.4, jsonlog 0.8; the worst ordinary case, one-word stderr messages of a file
/// named `/var/log/postgresql/postgresql-15-main.log`, is 3.5. Text JSON must escape (control
/// characters, quotes) can exceed it, which is why `max_output_bytes` stays under the host's cap.
const OUTPUT_PER_INPUT_BYTE: u64 = 4;

/// The smallest read worth a host call once something was read; below it the rest waits for
/// the next run.
const MIN_READ_BYTES: u64 = 64 * 1024;

/// `{"type":"pg_log","timestamp":` `,"database":` `,"entries":[` `]}` and a separating comma.
const ITEM_FRAME_BYTES: usize = 29 + 12 + 12 + 2 + 1;

/// One chunk of a `read-new` answer: whole lines of `path` starting at byte `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub path: String,
    pub offset: u64,
    pub data: String,
}

/// One collection: calls `read_new(max_bytes)` until it has nothing more, or until
/// [`Run::next_read_bytes`] says to stop, and returns the items. `now` (RFC 3339) is the items'
/// timestamp. The wasm glue passes `log-tail.read-new`; the tests a simulated host.
pub fn collect(
    settings: &Settings,
    now: String,
    mut read_new: impl FnMut(u64) -> Result<Vec<Chunk>, Error>,
) -> Result<Output, Error> {
    let mut run = Run::new(settings, now);
    while let Some(max_bytes) = run.next_read_bytes() {
        let chunks = read_new(max_bytes)?;
        // Chunks without data would otherwise make this loop spin.
        if chunks.iter().all(|chunk| chunk.data.is_empty()) {
            break;
        }
        for chunk in chunks {
            run.feed(&chunk.path, chunk.offset, &chunk.data)?;
        }
    }
    run.finish()
}

/// The parser of one file.
#[derive(Debug)]
enum FileParser<'s> {
    Stderr(StderrParser<'s>),
    Csv(CsvParser),
    Json,
}

#[derive(Debug)]
struct FileState<'s> {
    parser: FileParser<'s>,
    /// Where the next chunk of this path is expected to start.
    next_offset: u64,
}

/// The serialised entries of one item (a JSON array body without brackets).
#[derive(Debug, Default)]
struct ItemEntries {
    json: Vec<u8>,
    count: usize,
}

/// What a run produced.
#[derive(Debug)]
pub struct Output {
    /// The JSON array of `pg_log` items: `[]` when there was nothing new.
    pub json: String,
    pub items: usize,
    pub entries: usize,
    /// Entries left out by `min_level`.
    pub filtered: usize,
    /// Log bytes read.
    pub read_bytes: u64,
}

/// The state of one collection run.
#[derive(Debug)]
pub struct Run<'s> {
    settings: &'s Settings,
    now: String,
    files: BTreeMap<String, FileState<'s>>,
    /// Entries finished by the last parser call, not yet serialised.
    finished: Vec<Entry>,
    /// Items by database (`""` for entries without one), sorted by name.
    items: BTreeMap<String, Vec<ItemEntries>>,
    entries: usize,
    filtered: usize,
    read_bytes: u64,
    /// The length the output has so far (exact for the finished entries).
    output_bytes: usize,
}

impl<'s> Run<'s> {
    /// A run at time `now` (RFC 3339): the items' timestamp, and the entries' for lines that
    /// carry no time.
    pub fn new(settings: &'s Settings, now: String) -> Self {
        Run {
            settings,
            now,
            files: BTreeMap::new(),
            finished: Vec::new(),
            items: BTreeMap::new(),
            entries: 0,
            filtered: 0,
            read_bytes: 0,
            output_bytes: 2,
        }
    }

    /// How many bytes to ask of the next `read-new` call, or `None` to stop reading: at most
    /// `read_bytes`, within `max_bytes_per_run`, and small enough that the output should stay
    /// under `max_output_bytes` (the host would refuse the whole run, and offer the same lines
    /// again, forever). The first call of a run is never held below `MIN_READ_BYTES` (64 KiB)
    /// by the output budget, so that a run makes progress whatever the settings. Entries still
    /// being assembled are not counted yet: at most one per file.
    pub fn next_read_bytes(&self) -> Option<u64> {
        let settings = self.settings;
        let input_left = settings.max_bytes_per_run.saturating_sub(self.read_bytes);
        let output_left = settings
            .max_output_bytes
            .saturating_sub(self.output_bytes as u64);
        let by_output = output_left / OUTPUT_PER_INPUT_BYTE;
        if input_left == 0 || self.read_bytes > 0 && by_output < MIN_READ_BYTES {
            return None;
        }
        Some(
            settings
                .read_bytes
                .min(input_left)
                .min(by_output.max(MIN_READ_BYTES)),
        )
    }

    /// Parses one chunk: whole lines of `path` starting at byte `offset`.
    pub fn feed(&mut self, path: &str, offset: u64, data: &str) -> Result<(), Error> {
        let settings = self.settings;
        let max_bytes = settings.max_message_bytes;
        let state = self
            .files
            .entry(path.to_owned())
            .or_insert_with(|| FileState {
                parser: match settings.format.for_path(path) {
                    Format::Csvlog => FileParser::Csv(CsvParser::default()),
                    Format::Jsonlog => FileParser::Json,
                    Format::Stderr | Format::Auto => {
                        FileParser::Stderr(StderrParser::new(&settings.log_line_prefix))
                    }
                },
                next_offset: offset,
            });
        if state.next_offset != offset {
            finish_parser(&mut state.parser, path, &mut self.finished);
        }
        match &mut state.parser {
            FileParser::Stderr(parser) => {
                parser.feed(path, offset, data, max_bytes, &mut self.finished)
            }
            FileParser::Csv(parser) => {
                parser.feed(path, offset, data, max_bytes, &mut self.finished)
            }
            FileParser::Json => {
                crate::json::parse(path, offset, data, max_bytes, &mut self.finished)
            }
        }
        state.next_offset = offset + data.len() as u64;
        self.read_bytes += data.len() as u64;
        self.serialise_finished()
    }

    /// Ends every file's pending entry and returns the items.
    pub fn finish(mut self) -> Result<Output, Error> {
        for (path, state) in &mut self.files {
            finish_parser(&mut state.parser, path, &mut self.finished);
        }
        self.serialise_finished()?;

        let now = json_string(&self.now)?;
        let mut json = Vec::with_capacity(self.output_bytes);
        json.push(b'[');
        let mut items = 0;
        // Each item's text is freed as soon as it is copied.
        for (database, entries) in std::mem::take(&mut self.items) {
            let database = json_string(&database)?;
            for item in entries {
                if items > 0 {
                    json.push(b',');
                }
                items += 1;
                json.extend_from_slice(b"{\"type\":\"pg_log\",\"timestamp\":");
                json.extend_from_slice(now.as_bytes());
                json.extend_from_slice(b",\"database\":");
                json.extend_from_slice(database.as_bytes());
                json.extend_from_slice(b",\"entries\":[");
                json.extend_from_slice(&item.json);
                json.extend_from_slice(b"]}");
            }
        }
        json.push(b']');
        let json = String::from_utf8(json)
            .map_err(|e| Error::Invalid(format!("pg_log output is not UTF-8: {e}")))?;
        debug_assert_eq!(json.len(), self.output_bytes);
        Ok(Output {
            json,
            items,
            entries: self.entries,
            filtered: self.filtered,
            read_bytes: self.read_bytes,
        })
    }

    fn serialise_finished(&mut self) -> Result<(), Error> {
        for mut entry in self.finished.drain(..) {
            if !self.settings.keeps(&entry.level) {
                self.filtered += 1;
                continue;
            }
            if entry.timestamp.is_empty() {
                entry.timestamp.clone_from(&self.now);
                entry.timestamp_estimated = true;
            }
            let database = entry.database.clone().unwrap_or_default();
            let items = self.items.entry(database).or_default();
            if items
                .last()
                .is_none_or(|item| item.count >= self.settings.max_entries_per_item)
            {
                // The frame of a new item; the first item of the output has no comma before it.
                self.output_bytes += ITEM_FRAME_BYTES
                    + json_string(&self.now)?.len()
                    + json_string(entry.database.as_deref().unwrap_or(""))?.len()
                    - usize::from(self.entries == 0);
                items.push(ItemEntries::default());
            }
            let last = items.len() - 1;
            let item = &mut items[last];
            let before = item.json.len();
            if item.count > 0 {
                item.json.push(b',');
            }
            serde_json::to_writer(&mut item.json, &entry)
                .map_err(|e| Error::Invalid(format!("serialising a pg_log entry: {e}")))?;
            self.output_bytes += item.json.len() - before;
            item.count += 1;
            self.entries += 1;
        }
        Ok(())
    }
}

fn finish_parser(parser: &mut FileParser<'_>, path: &str, out: &mut Vec<Entry>) {
    match parser {
        FileParser::Stderr(parser) => parser.finish(out),
        FileParser::Csv(parser) => parser.finish(path, out),
        FileParser::Json => {}
    }
}

fn json_string(text: &str) -> Result<String, Error> {
    serde_json::to_string(text)
        .map_err(|e| Error::Invalid(format!("serialising `{text}` for pg_log: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pganalytics_guest::Value;

    const NOW: &str = "2026-11-27T12:00:00.000Z";
    const STDERR: &str = include_str!("../tests/data/stderr_debian_prefix.log");
    const CSVLOG: &str = include_str!("../tests/data/csvlog.csv");
    const JSONLOG: &str = include_str!("../tests/data/jsonlog.json");

    fn settings(json: &str) -> Settings {
        Settings::from_json(json).expect("valid settings")
    }

    /// Feeds `chunks` of (path, offset, data) and returns the parsed output array.
    fn run(settings: &Settings, chunks: &[(&str, u64, &str)]) -> Vec<Value> {
        let mut run = Run::new(settings, NOW.to_owned());
        for (path, offset, data) in chunks {
            run.feed(path, *offset, data).expect("feed");
        }
        let output = run.finish().expect("finish");
        let items: Vec<Value> = serde_json::from_str(&output.json).expect("valid JSON");
        assert_eq!(items.len(), output.items);
        items
    }

    /// Every entry of every item, in output order.
    fn entries(items: &[Value]) -> Vec<Value> {
        items
            .iter()
            .flat_map(|item| item["entries"].as_array().expect("entries").clone())
            .collect()
    }

    /// `data` cut into chunks at line ends, every `lines` lines, with their offsets.
    fn chunked<'a>(path: &'a str, data: &'a str, lines: usize) -> Vec<(&'a str, u64, &'a str)> {
        let mut chunks = Vec::new();
        let (mut start, mut count) = (0, 0);
        for (at, _) in data.match_indices('\n') {
            count += 1;
            if count == lines {
                chunks.push((path, start as u64, &data[start..=at]));
                start = at + 1;
                count = 0;
            }
        }
        if start < data.len() {
            chunks.push((path, start as u64, &data[start..]));
        }
        chunks
    }

    #[test]
    fn nothing_new_is_an_empty_array() {
        let s = settings("{}");
        let output = Run::new(&s, NOW.into()).finish().expect("finish");
        assert_eq!(output.json, "[]");
        assert_eq!(run(&s, &[("a.log", 0, "")]), Vec::<Value>::new());
    }

    #[test]
    fn item_shape_and_grouping_by_database() {
        let s = settings("{}");
        let items = run(
            &s,
            &[("/var/log/postgresql/postgresql-15-main.log", 0, STDERR)],
        );
        let databases: Vec<&str> = items
            .iter()
            .map(|i| i["database"].as_str().expect("database"))
            .collect();
        assert_eq!(databases, ["", "app", "nosuchdb", "postgres"]);
        for item in &items {
            let keys: Vec<&str> = item
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys.len(), 4, "{keys:?}");
            assert_eq!(item["type"], "pg_log");
            assert_eq!(item["timestamp"], NOW);
            for entry in item["entries"].as_array().expect("entries") {
                assert!(
                    entry["timestamp"]
                        .as_str()
                        .is_some_and(|t| t.ends_with('Z'))
                );
                assert!(entry["level"].is_string() && entry["message"].is_string());
                assert_eq!(entry["file"], "/var/log/postgresql/postgresql-15-main.log");
                assert!(entry["line_offset"].is_u64());
                let database = entry.get("database").and_then(Value::as_str).unwrap_or("");
                assert_eq!(database, item["database"]);
            }
        }
        let app = &items[1]["entries"];
        let unique = app
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["sqlstate"].is_null() && e["detail"] == "Key (id)=(1) already exists.")
            .expect("the unique violation");
        assert_eq!(
            unique,
            &serde_json::json!({
                "timestamp": "2026-11-27T00:25:25.356Z",
                "level": "ERROR",
                "message": "duplicate key value violates unique constraint \"accounts_pkey\"",
                "pid": 20044,
                "user": "alice",
                "database": "app",
                "detail": "Key (id)=(1) already exists.",
                "statement": "INSERT INTO accounts VALUES (1, 'b');",
                "file": "/var/log/postgresql/postgresql-15-main.log",
                "line_offset": STDERR.find("2026-11-27 00:25:25.356 UTC [20044] alice@app ERROR").unwrap(),
            })
        );
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_result() {
        let s = settings(r#"{"format":"auto"}"#);
        for (path, data) in [("pg.log", STDERR), ("pg.csv", CSVLOG), ("pg.json", JSONLOG)] {
            let whole = run(&s, &[(path, 0, data)]);
            for lines in [1, 2, 3, 7] {
                assert_eq!(
                    run(&s, &chunked(path, data, lines)),
                    whole,
                    "{path} by {lines}"
                );
            }
        }
    }

    #[test]
    fn interleaved_files_keep_their_own_entries() {
        let s = settings(r#"{"format":"auto"}"#);
        let mut chunks = Vec::new();
        let (a, b, c) = (
            chunked("pg.log", STDERR, 3),
            chunked("pg.csv", CSVLOG, 2),
            chunked("pg.json", JSONLOG, 5),
        );
        for i in 0..a.len().max(b.len()).max(c.len()) {
            chunks.extend(a.get(i).copied());
            chunks.extend(b.get(i).copied());
            chunks.extend(c.get(i).copied());
        }
        let all = entries(&run(&s, &chunks));
        let of = |file: &str| -> Vec<Value> {
            all.iter().filter(|e| e["file"] == file).cloned().collect()
        };
        assert_eq!(of("pg.log"), entries(&run(&s, &[("pg.log", 0, STDERR)])));
        assert_eq!(of("pg.csv"), entries(&run(&s, &[("pg.csv", 0, CSVLOG)])));
        assert_eq!(of("pg.json"), entries(&run(&s, &[("pg.json", 0, JSONLOG)])));
        // csvlog and jsonlog of one run agree; stderr has the same entries, less some fields.
        assert_eq!(of("pg.csv").len(), of("pg.json").len());
        assert_eq!(of("pg.log").len(), of("pg.csv").len());
        for (s, c) in of("pg.log").iter().zip(&of("pg.csv")) {
            assert_eq!(s["timestamp"], c["timestamp"]);
            assert_eq!(s["level"], c["level"]);
            assert_eq!(s["pid"], c["pid"]);
            assert_eq!(s["statement"], c["statement"]);
            assert_eq!(s["detail"], c["detail"]);
            let (sm, cm) = (
                s["message"].as_str().unwrap(),
                c["message"].as_str().unwrap(),
            );
            assert!(
                sm.starts_with(cm),
                "stderr adds \"at character N\": {sm} / {cm}"
            );
        }
    }

    #[test]
    fn a_rotation_ends_the_pending_entry() {
        let s = settings("{}");
        let before = "2026-11-27 00:25:25.356 UTC [1] a@db ERROR:  boom\n";
        let after = "\tstray continuation\n2026-11-27 00:25:26.000 UTC [1] a@db LOG:  new file\n";
        let items = run(&s, &[("pg.log", 500, before), ("pg.log", 0, after)]);
        // The orphan has no database, so it comes in the item of "" (sorted first).
        assert_eq!(items.len(), 2);
        let (orphans, db) = (entries(&items[..1]), entries(&items[1..]));
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0]["orphan"], true);
        assert_eq!(orphans[0]["message"], "stray continuation");
        assert_eq!(orphans[0]["line_offset"], 0);
        assert_eq!(db.len(), 2);
        assert_eq!(db[0]["message"], "boom");
        assert_eq!(db[0]["line_offset"], 500);
        assert_eq!(db[1]["message"], "new file");
        assert_eq!(db[1]["line_offset"], 20);
    }

    #[test]
    fn orphans_get_the_collection_time() {
        let s = settings("{}");
        let all = entries(&run(&s, &[("pg.log", 4096, "\tWHERE id = 1/0;\n")]));
        assert_eq!(
            all,
            [serde_json::json!({
                "timestamp": NOW,
                "timestamp_estimated": true,
                "level": "UNKNOWN",
                "message": "WHERE id = 1/0;",
                "file": "pg.log",
                "line_offset": 4096,
                "orphan": true,
            })]
        );
    }

    #[test]
    fn min_level_filters_known_levels_only() {
        let s = settings(r#"{"min_level":"error"}"#);
        let mut run = Run::new(&s, NOW.into());
        run.feed("pg.log", 0, "\torphan\n").expect("feed");
        run.feed("pg.log", 8, STDERR).expect("feed");
        let output = run.finish().expect("finish");
        let items: Vec<Value> = serde_json::from_str(&output.json).expect("JSON");
        let levels: Vec<String> = entries(&items)
            .iter()
            .map(|e| e["level"].as_str().unwrap().to_owned())
            .collect();
        assert!(levels.contains(&"UNKNOWN".to_owned()));
        assert!(levels.contains(&"LOG".to_owned()), "LOG ranks above ERROR");
        assert!(!levels.contains(&"WARNING".to_owned()));
        assert_eq!(output.filtered, 1, "the one WARNING");
        assert_eq!(output.entries, levels.len());
    }

    #[test]
    fn many_entries_are_split_into_items_never_dropped() {
        let s = settings(r#"{"max_entries_per_item":4}"#);
        let items = run(&s, &[("pg.log", 0, STDERR)]);
        let app: Vec<&Value> = items.iter().filter(|i| i["database"] == "app").collect();
        let counts: Vec<usize> = app
            .iter()
            .map(|i| i["entries"].as_array().unwrap().len())
            .collect();
        assert!(counts.iter().all(|&n| (1..=4).contains(&n)), "{counts:?}");
        assert!(counts[..counts.len() - 1].iter().all(|&n| n == 4));
        let unsplit = run(&settings("{}"), &[("pg.log", 0, STDERR)]);
        assert_eq!(entries(&items).len(), entries(&unsplit).len());
        let app_unsplit = unsplit.iter().find(|i| i["database"] == "app").unwrap();
        assert_eq!(
            counts.iter().sum::<usize>(),
            app_unsplit["entries"].as_array().unwrap().len()
        );
    }

    #[test]
    fn truncation_is_visible_in_the_output() {
        let s = settings(r#"{"max_message_bytes":10}"#);
        let all = entries(&run(
            &s,
            &[(
                "pg.log",
                0,
                "2026-11-27 00:25:25.356 UTC [1] a@b LOG:  statement: SELECT 1\n",
            )],
        ));
        assert_eq!(all[0]["message"], "statement:");
        assert_eq!(all[0]["truncated"], true);
    }

    /// A log-tail host in miniature: `read_new` hands out whole lines from where the previous
    /// call stopped, at most `max_bytes` in all, and the offsets are committed only when the
    /// run's output is under the host's cap.
    struct SimulatedHost {
        files: Vec<(&'static str, String)>,
        committed: Vec<usize>,
    }

    impl SimulatedHost {
        fn new(files: Vec<(&'static str, String)>) -> Self {
            let committed = vec![0; files.len()];
            SimulatedHost { files, committed }
        }

        /// One run; `None` if the host refused its output.
        fn run(&mut self, settings: &Settings, output_cap: usize) -> Option<Output> {
            let mut cursor = self.committed.clone();
            let files = &self.files;
            let output = collect(settings, NOW.into(), |max_bytes| {
                let mut left = max_bytes as usize;
                let mut chunks = Vec::new();
                for ((path, data), at) in files.iter().zip(&mut cursor) {
                    let mut end = *at;
                    while let Some(line) = data[end..].find('\n').map(|i| i + 1) {
                        if end + line - *at > left {
                            break;
                        }
                        end += line;
                    }
                    if end > *at {
                        chunks.push(Chunk {
                            path: (*path).to_owned(),
                            offset: *at as u64,
                            data: data[*at..end].to_owned(),
                        });
                        left -= end - *at;
                        *at = end;
                    }
                }
                Ok(chunks)
            })
            .expect("collect");
            (output.json.len() <= output_cap).then(|| {
                self.committed = cursor;
                output
            })
        }

        fn done(&self) -> bool {
            self.files
                .iter()
                .zip(&self.committed)
                .all(|((_, data), &at)| at == data.len())
        }
    }

    fn repeated(data: &str, bytes: usize) -> String {
        data.repeat(bytes / data.len() + 1)
    }

    /// (file, line_offset) of every entry of `items`.
    fn positions(items: &[Value]) -> Vec<(String, u64)> {
        entries(items)
            .iter()
            .map(|e| {
                (
                    e["file"].as_str().unwrap().to_owned(),
                    e["line_offset"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn runs_read_everything_and_stay_under_the_output_cap() {
        let files = vec![
            ("pg.log", repeated(STDERR, 1 << 20)),
            ("pg.csv", repeated(CSVLOG, 1 << 20)),
        ];
        let cap = 256 * 1024;
        let limited = settings(r#"{"format":"auto","max_output_bytes":262144}"#);
        let mut host = SimulatedHost::new(files.clone());
        let mut seen = Vec::new();
        let mut runs = 0;
        while !host.done() {
            let output = host.run(&limited, cap).expect("the host accepts every run");
            assert!(output.read_bytes > 0, "every run makes progress");
            let items: Vec<Value> = serde_json::from_str(&output.json).expect("JSON");
            seen.extend(positions(&items));
            runs += 1;
        }
        assert!(runs > 10, "{runs} runs");

        // Everything one unlimited run finds is found: an entry cut by a run boundary comes as
        // the entry plus an orphan of its remaining lines.
        let unlimited = settings(
            r#"{"format":"auto","max_output_bytes":1000000000,"max_bytes_per_run":1000000000}"#,
        );
        let mut host = SimulatedHost::new(files);
        let all = host.run(&unlimited, usize::MAX).expect("accepted");
        assert!(host.done());
        let all: Vec<Value> = serde_json::from_str(&all.json).expect("JSON");
        seen.sort();
        for position in positions(&all) {
            assert!(seen.binary_search(&position).is_ok(), "{position:?} lost");
        }
    }

    #[test]
    fn default_settings_keep_a_busy_log_under_the_default_host_cap() {
        let mut host = SimulatedHost::new(vec![("pg.log", repeated(STDERR, 4 << 20))]);
        let defaults = settings("{}");
        while !host.done() {
            let output = host
                .run(&defaults, 3 << 20)
                .expect("under max_output_bytes");
            if !host.done() {
                // A run that stopped early should not have stopped far below the cap.
                assert!(output.json.len() > 2 << 20, "{} bytes", output.json.len());
            }
        }
    }

    #[test]
    fn next_read_bytes_follows_the_budgets() {
        let defaults = settings("{}");
        let run = Run::new(&defaults, NOW.into());
        // The output starts as `[]`.
        assert_eq!(run.next_read_bytes(), Some((3 * 1024 * 1024 - 2) / 4));

        let small = settings(r#"{"max_bytes_per_run":100}"#);
        let mut run = Run::new(&small, NOW.into());
        assert_eq!(run.next_read_bytes(), Some(100));
        run.feed("pg.log", 0, &"x\n".repeat(50)).expect("feed");
        assert_eq!(run.next_read_bytes(), None);

        let tiny = settings(r#"{"max_output_bytes":1}"#);
        let mut run = Run::new(&tiny, NOW.into());
        assert_eq!(
            run.next_read_bytes(),
            Some(64 * 1024),
            "the first call always reads"
        );
        run.feed("pg.log", 0, "x\n").expect("feed");
        assert_eq!(run.next_read_bytes(), None);

        let chunky = settings(r#"{"read_bytes":1000}"#);
        assert_eq!(Run::new(&chunky, NOW.into()).next_read_bytes(), Some(1000));
    }

    #[test]
    fn chunks_without_data_end_the_loop() {
        let s = settings("{}");
        let mut calls = 0;
        let output = collect(&s, NOW.into(), |_| {
            calls += 1;
            Ok(vec![Chunk {
                path: "pg.log".into(),
                offset: 0,
                data: String::new(),
            }])
        })
        .expect("collect");
        assert_eq!(calls, 1);
        assert_eq!(output.json, "[]");
    }

    #[test]
    fn a_host_error_fails_the_run() {
        let s = settings("{}");
        let err = collect(&s, NOW.into(), |_| {
            Err(Error::Denied("log-tail is not granted".into()))
        })
        .expect_err("denied");
        assert!(matches!(err, Error::Denied(_)));
    }

    #[test]
    fn named_zones_are_reported() {
        let s = settings(r#"{"log_line_prefix":"%m [%p] "}"#);
        let all = entries(&run(
            &s,
            &[(
                "pg.log",
                0,
                "2026-11-27 01:28:43.690 CET [9] LOG:  checkpoint starting: time\n",
            )],
        ));
        assert_eq!(all[0]["timestamp"], "2026-11-27T01:28:43.690Z");
        assert_eq!(all[0]["zone"], "CET");
    }
}
