//! `http-spawn top`: a live view of a host, redrawn every second in the terminal's alternate
//! screen until `q`, Esc or ctrl-c: live and queued tasks against capacity, tasks started and
//! ended a second, and the running tasks, newest first.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use reqwest::Method;
use serde_json::Value;

use super::client::{Auth, Client, Failure};
use super::output;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between two refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many refreshes (none: until `q`).
    #[arg(short = 'n', long)]
    iterations: Option<u64>,
}

/// The terminal as `top` leaves it: its own screen and raw mode, given back however `top`
/// ends.
struct Screen;

impl Screen {
    fn enter() -> Result<Self, Failure> {
        let failed = |error: std::io::Error| Failure::new(format!("the terminal: {error}"));
        terminal::enable_raw_mode().map_err(failed)?;
        let screen = Self;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(failed)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

/// The signals that end `top` as `q` does.
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

fn stop_signals() -> Result<StopSignals, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let failed = |error: std::io::Error| Failure::new(format!("the signal handlers: {error}"));
    Ok(StopSignals {
        terminate: signal(SignalKind::terminate()).map_err(failed)?,
        hangup: signal(SignalKind::hangup()).map_err(failed)?,
    })
}

/// What the last refresh read, to turn totals into rates.
struct Last {
    at: Instant,
    started: u64,
    ended: u64,
}

pub async fn run(client: &Client, args: TopArgs) -> Result<i32, Failure> {
    if !std::io::stdout().is_terminal() {
        return Err(Failure::new(
            "top draws on a terminal; for scripts, use `health` or `ps` with -o json",
        ));
    }
    let interval = super::commands::seconds("--interval", args.interval)?;
    if interval < Duration::from_millis(100) {
        return Err(Failure::new("--interval must be at least 0.1 seconds"));
    }
    // Keys are read on a thread of their own: a key ends the wait for the next refresh.
    let (keys, mut quit) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            match event::read() {
                Ok(Event::Key(KeyEvent {
                    code, modifiers, ..
                })) => {
                    let stop = matches!(code, KeyCode::Char('q') | KeyCode::Esc)
                        || (code == KeyCode::Char('c')
                            && modifiers.contains(KeyModifiers::CONTROL));
                    if stop && keys.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    // SIGTERM and SIGHUP (a closed terminal) end it as `q` does, so the terminal is given back.
    let mut stop = stop_signals()?;
    let screen = Screen::enter()?;
    let mut last: Option<Last> = None;
    let mut drawn = 0u64;
    loop {
        // A key quits even while the host is slow to answer.
        let frame = tokio::select! {
            frame = frame(client, &mut last) => frame,
            _ = quit.recv() => break,
            () = stop.wait() => break,
        };
        draw(&frame);
        drawn += 1;
        if args.iterations.is_some_and(|n| drawn >= n) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = quit.recv() => break,
            () = stop.wait() => break,
        }
    }
    drop(screen);
    Ok(0)
}

/// The lines of one refresh: what the host says now, or why it said nothing.
async fn frame(client: &Client, last: &mut Option<Last>) -> Vec<String> {
    let now = Instant::now();
    let health = client
        .json(Method::GET, "/api/health", None, Auth::Api)
        .await;
    let running = client
        .json(
            Method::GET,
            "/api/tasks?status=running&limit=50",
            None,
            Auth::Api,
        )
        .await;
    let mut lines = vec![format!(
        "http-spawn top    {}    q to quit",
        jiff::Timestamp::now().strftime("%H:%M:%S")
    )];
    let health = match health {
        Ok((_, health)) => health,
        Err(failure) => {
            lines.push(format!("error: {}", failure.message));
            return lines;
        }
    };
    let count = |value: &Value| value.as_u64().unwrap_or(0);
    let (started, ended) = (
        count(&health["tasks"]["started"]),
        count(&health["tasks"]["ended"]),
    );
    let rates = last.as_ref().map(|last| {
        let secs = now.duration_since(last.at).as_secs_f64().max(1e-3);
        (
            started.saturating_sub(last.started) as f64 / secs,
            ended.saturating_sub(last.ended) as f64 / secs,
        )
    });
    *last = Some(Last {
        at: now,
        started,
        ended,
    });
    let (starts, ends) = rates.map_or(("-".to_owned(), "-".to_owned()), |(s, e)| {
        (format!("{s:.1}"), format!("{e:.1}"))
    });
    lines.push(format!(
        "live {} / {}    queued {}    started/s {starts}    ended/s {ends}    status {}",
        count(&health["live"]),
        count(&health["capacity"]),
        count(&health["queued"]),
        output::text(&health["status"]),
    ));
    lines.push(String::new());
    let wall = SystemTime::now();
    match running {
        Ok((_, page)) => {
            let mut table = output::table(&["pid", "name", "worker", "step", "age"]);
            for task in page["tasks"].as_array().into_iter().flatten() {
                table.add_row(vec![
                    output::text(&task["pid"]),
                    output::text(&task["name"]),
                    output::text(&task["worker"]),
                    output::text(&task["step"]),
                    output::age(&task["spawned_at"], wall),
                ]);
            }
            lines.extend(table.lines().map(|line| {
                line.strip_prefix(' ')
                    .unwrap_or(&line)
                    .trim_end()
                    .to_owned()
            }));
        }
        Err(failure) => lines.push(format!("error: {}", failure.message)),
    }
    lines
}

/// Draws `lines` from the top of the screen, cut to its height.
fn draw(lines: &[String]) {
    // A terminal that does not say its size (0 rows) gets the usual 24.
    let height = match terminal::size() {
        Ok((_, rows)) if rows > 0 => usize::from(rows),
        _ => 24,
    };
    let mut stdout = std::io::stdout();
    let _ = execute!(
        stdout,
        cursor::MoveTo(0, 0),
        terminal::Clear(terminal::ClearType::All)
    );
    for line in lines.iter().take(height.saturating_sub(1)) {
        // Raw mode: a line ends with a carriage return too.
        let _ = write!(stdout, "{line}\r\n");
    }
    let _ = stdout.flush();
}
