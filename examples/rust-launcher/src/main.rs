//! demo-launcher: the entrypoint of the demo image. Like text-generation-launcher it reads
//! its settings from flags and the environment, then starts the image's components and
//! reports what they say. Standard library only.

use std::env;
use std::process::{exit, Command};

struct Settings {
    prompt: String,
    model: String,
    port: String,
}

fn parse() -> Settings {
    let mut prompt = String::from("Hello, GPU world!");
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--prompt" => prompt = args.next().unwrap_or_default(),
            "--version" => {
                println!("demo-launcher {}", env!("CARGO_PKG_VERSION"));
                exit(0);
            }
            other => {
                eprintln!("demo-launcher: unknown argument {other} (use --prompt TEXT or --version)");
                exit(2);
            }
        }
    }
    Settings {
        prompt,
        model: env::var("MODEL_ID").unwrap_or_else(|_| "demo/tiny".into()),
        port: env::var("PORT").unwrap_or_else(|_| "80".into()),
    }
}

fn run(name: &str, program: &str, args: &[&str]) -> bool {
    match Command::new(program).args(args).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines() {
                println!("  [{name}] {line}");
            }
            let err = String::from_utf8_lossy(&out.stderr);
            for line in err.lines() {
                println!("  [{name}!] {line}");
            }
            out.status.success()
        }
        Err(e) => {
            println!("  [{name}] cannot start {program}: {e}");
            false
        }
    }
}

fn main() {
    let s = parse();
    println!(
        "demo-launcher {}: model={} port={} prompt={:?}",
        env!("CARGO_PKG_VERSION"),
        s.model,
        s.port,
        s.prompt
    );
    let mut ok = true;
    ok &= run("tokenizer", "/app/bin/tokenize", &[s.prompt.as_str()]);
    ok &= run("kernels", "/app/bin/saxpy", &["4096"]);
    ok &= run(
        "python",
        "python3",
        &["-c", "import demo_ext; print(demo_ext.describe()); print('checksum', demo_ext.checksum(b'assemble'))"],
    );
    if ok {
        println!("demo-launcher: all components answered");
    } else {
        println!("demo-launcher: a component failed");
        exit(1);
    }
}
