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
use crate::entry::{Entry, Sink, write_json, write_json_string};
use crate::settings::{Format, Settings};
use crate::stderr::StderrParser;
use crate::timestamp::Clock;
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

/// Capacity of each block of an item's text. An item is written into blocks rather than one
/// buffer grown by doubling, so that its text is not copied again at every doubling (it is
/// copied once, into the output).
const BLOCK_BYTES: usize = 64 * 1024;

/// A new block is started before an entry when less than this is left in the current one, so
/// that an ordinary entry never makes a block grow.
const BLOCK_SLACK_BYTES: usize = 4 * 1024;

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
    Json(Clock),
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
    /// The text, in order; an entry is never split between two blocks.
    blocks: Vec<String>,
    count: usize,
}

/// The items of one database.
#[derive(Debug)]
struct Group {
    database: String,
    items: Vec<ItemEntries>,
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
    files: BTreeMap<String, FileState<'s>>,
    out: Items<'s>,
    read_bytes: u64,
}

/// The entries serialised so far, by item: the sink every parser writes into.
#[derive(Debug)]
struct Items<'s> {
    settings: &'s Settings,
    /// The collection time as a JSON string, for items and for entries without a time.
    now: String,
    /// Items by database (`""` for entries without one), in the order first seen.
    groups: Vec<Group>,
    /// The index in `groups` of each database, sorted by name: the output's order.
    by_name: BTreeMap<String, usize>,
    /// The group the last entry went to: consecutive entries are mostly of one database, and
    /// comparing one name costs less than searching the map for every entry.
    last_group: usize,
    entries: usize,
    filtered: usize,
    /// The length the output has so far (exact for the finished entries).
    output_bytes: usize,
}

impl Sink for Items<'_> {
    fn entry(&mut self, entry: &Entry<'_>) {
        if !self.settings.keeps(&entry.level) {
            self.filtered += 1;
            return;
        }
        let database = entry.database.as_deref().unwrap_or("");
        let group = match self.groups.get(self.last_group) {
            Some(group) if group.database == database => self.last_group,
            _ => match self.by_name.get(database) {
                Some(&group) => group,
                None => {
                    self.by_name.insert(database.to_owned(), self.groups.len());
                    self.groups.push(Group {
                        database: database.to_owned(),
                        items: Vec::new(),
                    });
                    self.groups.len() - 1
                }
            },
        };
        self.last_group = group;
        let items = &mut self.groups[group].items;
        if items
            .last()
            .is_none_or(|item| item.count >= self.settings.max_entries_per_item)
        {
            // The frame of a new item; the first item of the output has no comma before it.
            let mut name = String::new();
            write_json_string(&mut name, database);
            self.output_bytes +=
                ITEM_FRAME_BYTES + self.now.len() + name.len() - usize::from(self.entries == 0);
            items.push(ItemEntries::default());
        }
        let item = items.last_mut().expect("pushed above");
        if item
            .blocks
            .last()
            .is_none_or(|block| block.capacity() - block.len() < BLOCK_SLACK_BYTES)
        {
            item.blocks.push(String::with_capacity(BLOCK_BYTES));
        }
        let block = item.blocks.last_mut().expect("pushed above");
        let before = block.len();
        if item.count > 0 {
            block.push(',');
        }
        write_json(block, entry, self.now.as_str());
        self.output_bytes += block.len() - before;
        item.count += 1;
        self.entries += 1;
    }
}

impl<'s> Run<'s> {
    /// A run at time `now` (RFC 3339): the items' timestamp, and the entries' for lines that
    /// carry no time.
    pub fn new(settings: &'s Settings, now: String) -> Self {
        let mut now_json = String::new();
        write_json_string(&mut now_json, &now);
        Run {
            settings,
            files: BTreeMap::new(),
            out: Items {
                settings,
                now: now_json,
                groups: Vec::new(),
                by_name: BTreeMap::new(),
                last_group: 0,
                entries: 0,
                filtered: 0,
                output_bytes: 2,
            },
            read_bytes: 0,
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
            .saturating_sub(self.out.output_bytes as u64);
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

    /// Parses one chunk: whole lines of `path` starting at byte `offset`. Fails when the lines
    /// of a stderr file do not fit `log_line_prefix` (see [`crate::stderr::PrefixFit`]): the
    /// run must then send nothing, so that the host keeps the offsets where they were.
    pub fn feed(&mut self, path: &str, offset: u64, data: &str) -> Result<(), Error> {
        let settings = self.settings;
        let max_bytes = settings.max_message_bytes;
        if !self.files.contains_key(path) {
            let clock = Clock::new(settings.log_timezone.clone());
            let parser = match settings.format.for_path(path) {
                Format::Csvlog => FileParser::Csv(CsvParser::new(clock)),
                Format::Jsonlog => FileParser::Json(clock),
                Format::Stderr | Format::Auto => {
                    FileParser::Stderr(StderrParser::new(&settings.log_line_prefix, clock))
                }
            };
            let state = FileState {
                parser,
                next_offset: offset,
            };
            self.files.insert(path.to_owned(), state);
        }
        let Some(state) = self.files.get_mut(path) else {
            return Ok(());
        };
        if state.next_offset != offset {
            finish_parser(&mut state.parser, path, &mut self.out);
        }
        match &mut state.parser {
            FileParser::Stderr(parser) => {
                parser.feed(path, offset, data, max_bytes, &mut self.out);
                if parser.fit().mismatched() {
                    return Err(prefix_mismatch(settings, path, parser));
                }
            }
            FileParser::Csv(parser) => parser.feed(path, offset, data, max_bytes, &mut self.out),
            FileParser::Json(clock) => {
                crate::json::parse(path, offset, data, max_bytes, clock, &mut self.out)
            }
        }
        state.next_offset = offset + data.len() as u64;
        self.read_bytes += data.len() as u64;
        Ok(())
    }

    /// Ends every file's pending entry and returns the items.
    pub fn finish(mut self) -> Result<Output, Error> {
        for (path, state) in &mut self.files {
            finish_parser(&mut state.parser, path, &mut self.out);
        }
        let mut out = self.out;
        // Built as a `String` from `str` pieces: no UTF-8 pass over the output at the end.
        let mut json = String::with_capacity(out.output_bytes);
        json.push('[');
        let mut items = 0;
        let mut name = String::new();
        // Each item's text is freed as soon as it is copied.
        for (database, &group) in &out.by_name {
            name.clear();
            write_json_string(&mut name, database);
            for item in std::mem::take(&mut out.groups[group].items) {
                if items > 0 {
                    json.push(',');
                }
                items += 1;
                json.push_str("{\"type\":\"pg_log\",\"timestamp\":");
                json.push_str(&out.now);
                json.push_str(",\"database\":");
                json.push_str(&name);
                json.push_str(",\"entries\":[");
                for block in item.blocks {
                    json.push_str(&block);
                }
                json.push_str("]}");
            }
        }
        json.push(']');
        debug_assert_eq!(json.len(), out.output_bytes);
        Ok(Output {
            json,
            items,
            entries: out.entries,
            filtered: out.filtered,
            read_bytes: self.read_bytes,
        })
    }
}

fn finish_parser(parser: &mut FileParser<'_>, path: &str, out: &mut Items<'_>) {
    match parser {
        FileParser::Stderr(parser) => parser.finish(out),
        FileParser::Csv(parser) => parser.finish(path, out),
        FileParser::Json(_) => {}
    }
}

/// The run's error for a stderr file whose lines do not fit the configured prefix: the setting,
/// its value, a line of the file and what to do.
fn prefix_mismatch(settings: &Settings, path: &str, parser: &StderrParser<'_>) -> Error {
    let fit = parser.fit();
    Error::Invalid(format!(
        "pg_log setting `log_line_prefix` = `{}` does not match the lines of `{path}`: {} \
         line(s) matched it, {} look like log lines written under another prefix, e.g. `{}`; \
         set `log_line_prefix` in this plugin's settings to the server's value (`SHOW \
         log_line_prefix;` in psql). Nothing of this run was sent and the log offsets were not \
         committed: these lines are read again once the setting is fixed",
        settings.log_line_prefix.as_str(),
        fit.matched,
        fit.foreign,
        fit.sample.as_deref().unwrap_or(""),
    ))
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
    fn alternating_databases_keep_their_items_sorted_and_in_order() {
        let line =
            |db: &str, n: usize| format!("2026-11-27 00:25:25.356 UTC [1] u@{db} LOG:  {db} {n}\n");
        let log: String = (0..7)
            .map(|n| line(["zeta", "alpha", "zeta", "mid"][n % 4], n))
            .chain([line("alpha", 7), line("alpha", 8)])
            .collect();
        for max in [1, 2, 100] {
            let s = settings(&format!(r#"{{"max_entries_per_item":{max}}}"#));
            let items = run(&s, &[("pg.log", 0, &log)]);
            let mut seen = Vec::new();
            for item in &items {
                let database = item["database"].as_str().expect("database");
                let entries = item["entries"].as_array().expect("entries");
                assert!(entries.len() <= max);
                for entry in entries {
                    assert_eq!(entry["database"], database);
                    seen.push(entry["message"].as_str().expect("message").to_owned());
                }
            }
            assert_eq!(
                seen,
                [
                    "alpha 1", "alpha 5", "alpha 7", "alpha 8", "mid 3", "zeta 0", "zeta 2",
                    "zeta 4", "zeta 6"
                ],
                "max {max}"
            );
        }
    }

    #[test]
    fn items_longer_than_a_block_and_entries_larger_than_one_keep_every_byte() {
        // Small entries across many blocks, entries larger than a block (with continuation
        // lines, quotes and multi-byte characters), and entries just around the slack left.
        let mut log = String::new();
        let mut expected = Vec::new();
        let mut add = |message: String| {
            let mut lines = message.split('\n');
            log += &format!(
                "2026-11-27 00:25:25.356 UTC [1] u@db LOG:  {}\n",
                lines.next().unwrap_or("")
            );
            for line in lines {
                log += &format!("\t{line}\n");
            }
            expected.push(message);
        };
        for n in 0..3000 {
            add(format!("small entry {n} with \"quotes\" and é"));
        }
        for size in [
            BLOCK_SLACK_BYTES - 200,
            BLOCK_SLACK_BYTES,
            BLOCK_BYTES,
            3 * BLOCK_BYTES,
        ] {
            for n in 0..3 {
                let line = format!("{n} \"x\" é ").repeat(size / 60 + 1);
                add(format!("{line}\n{line}"));
            }
        }
        let s = settings(r#"{"max_message_bytes":1000000,"max_entries_per_item":100000}"#);
        let mut run = Run::new(&s, NOW.to_owned());
        run.feed("pg.log", 0, &log).expect("feed");
        let output = run.finish().expect("finish");
        let items: Vec<Value> = serde_json::from_str(&output.json).expect("valid JSON");
        let messages: Vec<String> = entries(&items)
            .iter()
            .map(|e| e["message"].as_str().expect("message").to_owned())
            .collect();
        assert_eq!(messages, expected);
        assert!(output.json.len() > 6 * BLOCK_BYTES);
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
    fn named_zones_never_claim_utc_and_resolve_with_log_timezone() {
        let line = "2026-11-27 01:28:43.690 CET [9] LOG:  checkpoint starting: time\n";
        let unresolved = entries(&run(
            &settings(r#"{"log_line_prefix":"%m [%p] "}"#),
            &[("pg.log", 0, line)],
        ));
        assert_eq!(unresolved[0]["timestamp"], "2026-11-27T01:28:43.690");
        assert_eq!(unresolved[0]["zone"], "CET");

        let berlin = settings(r#"{"log_line_prefix":"%m [%p] ","log_timezone":"Europe/Berlin"}"#);
        let summer = "2026-07-01 12:00:00.000 CEST [9] LOG:  checkpoint starting: time\n";
        let resolved = entries(&run(
            &berlin,
            &[("pg.log", 0, line), ("pg.log", 66, summer)],
        ));
        assert_eq!(resolved[0]["timestamp"], "2026-11-27T00:28:43.690Z");
        assert_eq!(resolved[1]["timestamp"], "2026-07-01T10:00:00.000Z");
        assert!(resolved.iter().all(|e| e.get("zone").is_none()));

        // The server's zone is not the one configured: no guess.
        let wrong = settings(r#"{"log_line_prefix":"%m [%p] ","log_timezone":"America/New_York"}"#);
        let all = entries(&run(&wrong, &[("pg.log", 0, line)]));
        assert_eq!(all[0]["timestamp"], "2026-11-27T01:28:43.690");
        assert_eq!(all[0]["zone"], "CET");

        // csvlog and jsonlog go through the same zone.
        let csv = "2026-07-01 12:00:00.000 CEST,,,9,,s.1,1,,,,0,LOG,00000,\"hello\",,,,,,,,,\"\",\"checkpointer\",,0\n";
        let json = "{\"timestamp\":\"2026-07-01 12:00:00.000 CEST\",\"pid\":9,\"error_severity\":\"LOG\",\"message\":\"hello\"}\n";
        let auto = settings(r#"{"format":"auto","log_timezone":"Europe/Berlin"}"#);
        for e in entries(&run(&auto, &[("pg.csv", 0, csv), ("pg.json", 0, json)])) {
            assert_eq!(e["timestamp"], "2026-07-01T10:00:00.000Z", "{e}");
        }
    }

    #[test]
    fn duration_and_position_are_numbers_in_every_format() {
        let s = settings(r#"{"format":"auto","log_line_prefix":"%m [%p] %q%u@%d "}"#);
        let stderr = "2026-11-27 00:25:25.356 UTC [7] a@b LOG:  duration: 12.345 ms  statement: SELECT 1\n\
                      2026-11-27 00:25:25.357 UTC [7] a@b LOG:  duration: 0.052 ms\n\
                      2026-11-27 00:25:25.358 UTC [7] a@b ERROR:  syntax error at or near \"SELEC\" at character 1\n\
                      2026-11-27 00:25:25.358 UTC [7] a@b STATEMENT:  SELEC 1\n";
        let csv = "2026-11-27 00:25:25.356 UTC,\"a\",\"b\",7,,s.1,1,,,,0,LOG,00000,\"duration: 12.345 ms  statement: SELECT 1\",,,,,,,,,\"\",\"client backend\",,0\n\
                   2026-11-27 00:25:25.357 UTC,\"a\",\"b\",7,,s.1,2,,,,0,LOG,00000,\"duration: 0.052 ms\",,,,,,,,,\"\",\"client backend\",,0\n\
                   2026-11-27 00:25:25.358 UTC,\"a\",\"b\",7,,s.1,3,,,,0,ERROR,42601,\"syntax error at or near \"\"SELEC\"\"\",,,,,,\"SELEC 1\",1,,\"\",\"client backend\",,0\n";
        let json = "{\"timestamp\":\"2026-11-27 00:25:25.356 UTC\",\"user\":\"a\",\"dbname\":\"b\",\"pid\":7,\"error_severity\":\"LOG\",\"message\":\"duration: 12.345 ms  statement: SELECT 1\"}\n\
                    {\"timestamp\":\"2026-11-27 00:25:25.357 UTC\",\"user\":\"a\",\"dbname\":\"b\",\"pid\":7,\"error_severity\":\"LOG\",\"message\":\"duration: 0.052 ms\"}\n\
                    {\"timestamp\":\"2026-11-27 00:25:25.358 UTC\",\"user\":\"a\",\"dbname\":\"b\",\"pid\":7,\"error_severity\":\"ERROR\",\"state_code\":\"42601\",\"message\":\"syntax error at or near \\\"SELEC\\\"\",\"statement\":\"SELEC 1\",\"cursor_position\":1}\n";
        for (path, data) in [("pg.log", stderr), ("pg.csv", csv), ("pg.json", json)] {
            let all = entries(&run(&s, &[(path, 0, data)]));
            assert_eq!(all.len(), 3, "{path}");
            assert_eq!(all[0]["duration_ms"], serde_json::json!(12.345), "{path}");
            assert!(all[0]["duration_ms"].is_f64(), "{path}: a number, not text");
            assert_eq!(all[1]["duration_ms"], serde_json::json!(0.052), "{path}");
            assert!(all[2].get("duration_ms").is_none(), "{path}");
            assert_eq!(
                all[2]["message"], "syntax error at or near \"SELEC\"",
                "{path}"
            );
            assert_eq!(all[2]["position"], 1, "{path}");
            assert_eq!(all[2]["statement"], "SELEC 1", "{path}");
        }
    }

    const TCP_VERBOSE: &str = include_str!("../tests/data/stderr_tcp_verbose.log");
    const PADDED: &str = include_str!("../tests/data/stderr_padded_prefix.log");
    const DEBIAN_PREFIX: &str = "%m [%p] %q%u@%d ";
    const TCP_PREFIX: &str = "%t:%r:%u@%d:[%p]: ";
    const PADDED_PREFIX: &str = "%m %q[%10p] %-8u %d %a|%h|%c|%l|%v|%x|%e|%i|%b|%Q|%s|%n %%%% ";

    fn with_prefix(prefix: &str) -> Settings {
        settings(&serde_json::json!({ "log_line_prefix": prefix }).to_string())
    }

    /// The message of the run's error for `data` read under `prefix`, `None` if it succeeded.
    fn mismatch(prefix: &str, data: &str) -> Option<String> {
        let s = with_prefix(prefix);
        let mut run = Run::new(&s, NOW.into());
        match run.feed("/var/log/postgresql/postgresql-15-main.log", 0, data) {
            Ok(()) => {
                run.finish().expect("finish");
                None
            }
            Err(Error::Invalid(message)) => Some(message),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn a_prefix_that_is_not_the_servers_fails_the_run_and_says_why() {
        // Every pair of the three real logs and their prefixes, plus PostgreSQL's default
        // `%m [%p] ` against Debian's (only the background lines match), and an empty prefix.
        let logs = [
            (DEBIAN_PREFIX, STDERR),
            (TCP_PREFIX, TCP_VERBOSE),
            (PADDED_PREFIX, PADDED),
        ];
        for (prefix, _) in logs {
            for (right, data) in logs {
                if prefix == right {
                    assert_eq!(mismatch(prefix, data), None, "{prefix}");
                    continue;
                }
                let message = mismatch(prefix, data)
                    .unwrap_or_else(|| panic!("`{prefix}` on the log of `{right}`"));
                assert!(
                    message.starts_with(&format!(
                        "pg_log setting `log_line_prefix` = `{prefix}` does not match the lines \
                         of `/var/log/postgresql/postgresql-15-main.log`"
                    )),
                    "{message}"
                );
                let first_line = data.lines().next().expect("a line");
                assert!(
                    message.contains(&format!("e.g. `{first_line}`"))
                        || message.contains("e.g. `2026-11-27 "),
                    "{message}"
                );
                assert!(message.contains("SHOW log_line_prefix;"), "{message}");
                assert!(message.contains("offsets were not committed"), "{message}");
            }
        }
        assert!(
            mismatch("%m [%p] ", STDERR).is_some(),
            "session lines do not match"
        );
        assert!(mismatch("", STDERR).is_some());
        assert!(mismatch("%m ", STDERR).is_some());
    }

    #[test]
    fn a_mismatched_prefix_commits_nothing_and_a_fixed_one_reads_it_all() {
        // The reported case: megabytes of a busy log, every line under another prefix.
        let log = repeated(TCP_VERBOSE, 3 << 20);
        let mut host = SimulatedHost::new(vec![("pg.log", log.clone())]);
        let wrong = with_prefix(DEBIAN_PREFIX);
        let cursor = host.committed.clone();
        let files = &host.files;
        let result = collect(&wrong, NOW.into(), |max_bytes| {
            let data = &files[0].1;
            let end = data[..max_bytes as usize].rfind('\n').map_or(0, |i| i + 1);
            Ok(vec![Chunk {
                path: "pg.log".into(),
                offset: 0,
                data: data[..end].to_owned(),
            }])
        });
        let Err(Error::Invalid(message)) = result else {
            panic!("expected the prefix error, got {result:?}");
        };
        assert!(message.contains("`log_line_prefix`"), "{message}");
        assert_eq!(host.committed, cursor, "nothing committed");

        let right = with_prefix(TCP_PREFIX);
        let mut entries = 0;
        while !host.done() {
            let output = host.run(&right, 4 << 20).expect("accepted");
            entries += output.entries;
        }
        let per_copy = {
            let s = with_prefix(TCP_PREFIX);
            let mut run = Run::new(&s, NOW.into());
            run.feed("pg.log", 0, TCP_VERBOSE).expect("feed");
            run.finish().expect("finish").entries
        };
        let copies = log.len() / TCP_VERBOSE.len();
        assert!(
            entries >= per_copy * copies,
            "{entries} entries for {copies} copies of {per_copy}"
        );
    }

    #[test]
    fn continuation_lines_and_other_text_are_not_a_mismatch() {
        // Multi-line statements, DETAIL/HINT/CONTEXT lines, a memory context dump (written
        // without prefix by the server on out-of-memory) and a crash report: many lines that
        // start no entry, none of them a log line under another prefix.
        let mut log = String::new();
        for i in 0..200 {
            log += &format!(
                "2026-11-27 00:25:25.356 UTC [{i}] app@shop LOG:  statement: SELECT a,\n\
                 \t       b,\n\t       c\n\tFROM t\n\tWHERE x = 'LOG:  not a label'\n\
                 \tAND y = 1\n\
                 2026-11-27 00:25:25.357 UTC [{i}] app@shop ERROR:  boom\n\
                 2026-11-27 00:25:25.357 UTC [{i}] app@shop DETAIL:  line one\n\
                 \tline two\n\
                 2026-11-27 00:25:25.357 UTC [{i}] app@shop HINT:  try again\n\
                 2026-11-27 00:25:25.357 UTC [{i}] app@shop CONTEXT:  PL/pgSQL function f() line 3\n\
                 \tSQL statement \"SELECT 1\"\n"
            );
        }
        log += "TopMemoryContext: 97664 total in 5 blocks; 14376 free (9 chunks); 83288 used\n";
        for i in 0..300 {
            log += &format!(
                "  CachedPlan: 2048 total in 2 blocks; 520 free (0 chunks); 1528 used: SELECT {i}\n"
            );
        }
        log += "Grand total: 1523712 bytes in 254 blocks; 490720 free (108 chunks); 1032992 used\n";
        log += "TRAP: failed Assert(\"false\"), File: \"x.c\", Line: 1, PID: 7\n";
        log += "2026-11-27 00:25:26.000 UTC [7] app@shop ERROR:  out of memory\n";
        assert_eq!(mismatch(DEBIAN_PREFIX, &log), None);
        // The dump alone (a run that reads just it) is no mismatch either.
        let dump_start = log.find("TopMemoryContext").expect("dump");
        assert_eq!(mismatch(DEBIAN_PREFIX, &log[dump_start..]), None);
    }

    #[test]
    fn a_few_stray_lines_do_not_fail_a_run() {
        let log = format!("{STDERR}some tool wrote WARNING:  this without a prefix\n{STDERR}");
        assert_eq!(mismatch(DEBIAN_PREFIX, &log), None);
    }

    #[test]
    fn lines_of_postgresqls_default_prefix_fit_debians() {
        // `%m [%p] ` (PostgreSQL's default) is Debian's `%m [%p] %q%u@%d ` without the session
        // part, which `%q` allows to be absent: a server left at the default is read fine.
        let default_prefix: String = STDERR
            .lines()
            .map(|line| {
                let (head, rest) = line.split_once("] ").unwrap_or(("", line));
                match rest.split_once(' ') {
                    Some((who, tail)) if who.contains('@') && !head.is_empty() => {
                        format!("{head}] {tail}\n")
                    }
                    _ => format!("{line}\n"),
                }
            })
            .collect();
        assert!(!default_prefix.contains("alice@app"));
        assert_eq!(mismatch(DEBIAN_PREFIX, &default_prefix), None);
        let entries = entries(&run(
            &with_prefix(DEBIAN_PREFIX),
            &[("pg.log", 0, &default_prefix)],
        ));
        assert!(entries.iter().all(|e| e.get("orphan").is_none()));
    }
}
