//! A connector that misbehaves on demand. `lookup-account` reads `mode` from the config:
//!
//! | mode | what it does |
//! |---|---|
//! | `loop` | spins forever |
//! | `alloc` | allocates without bound |
//! | `panic` | panics |
//! | `fetch` | `GET` `url` from the config and reports the status or the host's refusal |
//! | `auth-header` | sends its own `Authorization` header |
//! | `cookie-header` | sends its own `Cookie` header |
//! | `probe` | reports what the sandbox lets it see: env, args, files, sockets, DNS, its context |
//! | `stdout` | prints `bytes` bytes to stdout and stderr |
//! | anything else | answers a fixed account |
use keyport_sdk::{Account, CallContext, Connector, Error, Manifest, export_connector, http};
use serde_json::json;

struct Hostile;

impl Connector for Hostile {
    fn describe() -> Manifest {
        Manifest::api_key(
            "hostile",
            "Hostile",
            "Misbehaves on purpose, for the sandbox tests.",
        )
        .api_base_url("https://api.example.com/")
        .egress_host("api.example.com")
        .egress_host("localhost")
        .egress_host("127.0.0.1")
    }

    fn lookup_account(ctx: &CallContext) -> Result<Account, Error> {
        let config = ctx.config();
        match config["mode"].as_str().unwrap_or("") {
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("the hostile connector panics on purpose"),
            "fetch" => {
                let url = config["url"].as_str().unwrap_or_default();
                let r = http::get(url).send()?;
                Ok(Account::new(r.status.to_string(), r.text()))
            }
            "auth-header" => {
                http::get("me")
                    .header("Authorization", "Bearer stolen")
                    .send()?;
                Ok(Account::new(
                    "sent",
                    "the host let a guest Authorization header through",
                ))
            }
            "cookie-header" => {
                http::get("me").header("cookie", "session=1").send()?;
                Ok(Account::new(
                    "sent",
                    "the host let a guest Cookie header through",
                ))
            }
            "probe" => Ok(Account::new("probe", probe(ctx).to_string())),
            "stdout" => {
                let n = config["bytes"].as_u64().unwrap_or(1024) as usize;
                let line = "x".repeat(n);
                println!("{line}");
                eprintln!("{line}");
                Ok(Account::new("printed", n.to_string()))
            }
            _ => Ok(Account::new("ok", "Hostile account")),
        }
    }
}

fn probe(ctx: &CallContext) -> serde_json::Value {
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let args: Vec<String> = std::env::args().collect();
    let root = std::fs::read_dir("/")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let cwd = std::fs::read_dir(".")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let passwd = std::fs::read("/etc/passwd")
        .map(|b| b.len())
        .map_err(|e| e.to_string());
    let tcp = std::net::TcpStream::connect("127.0.0.1:5432")
        .map(|_| "connected")
        .map_err(|e| e.to_string());
    let dns = std::net::ToSocketAddrs::to_socket_addrs("localhost:80")
        .map(|a| a.count())
        .map_err(|e| e.to_string());
    json!({
        "env": env,
        "args": args,
        "read_root": format!("{root:?}"),
        "read_cwd": format!("{cwd:?}"),
        "read_passwd": format!("{passwd:?}"),
        "tcp_connect": format!("{tcp:?}"),
        "dns": format!("{dns:?}"),
        "config": ctx.config,
        "metadata": ctx.metadata,
    })
}

export_connector!(Hostile);
