//! Test program: tries every ambient authority a WASI program might have
//! (environment, arguments, files, directories, sockets) and reports what it
//! got. Under skillbox every probe must come back empty or refused.
//!
//! Input: `{"path": "/etc/passwd", "connect": "127.0.0.1:PORT"}` (both optional).

wit_bindgen::generate!({ path: "../../wit", world: "skill" });


#[derive(serde::Deserialize, Default)]
struct Input {
    path: Option<String>,
    connect: Option<String>,
}

struct Probe;

impl Guest for Probe {
    fn run(input: String) -> Result<String, SkillError> {
        let input: Input = serde_json::from_str(&input).map_err(|e| SkillError::InvalidInput(e.to_string()))?;
        let path = input.path.unwrap_or_else(|| "/etc/passwd".into());
        let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<String> = std::env::args().collect();
        let home = std::env::var("HOME").ok();
        let read = std::fs::read(&path).map(|b| b.len()).map_err(|e| e.to_string());
        let list_root = std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.to_string());
        let list_cwd = std::fs::read_dir(".").map(|d| d.count()).map_err(|e| e.to_string());
        let connect = input
            .connect
            .map(|addr| std::net::TcpStream::connect(addr.as_str()).map(|_| "connected").map_err(|e| e.to_string()));
        // Writing to stdout must work (it is captured), not reach the terminal.
        println!("probe-sandbox wrote this to stdout");
        Ok(serde_json::json!({
            "env": env,
            "args": args,
            "home": home,
            "read_file": result(read),
            "list_root": result(list_root),
            "list_cwd": result(list_cwd),
            "connect": connect.map(result),
        })
        .to_string())
    }
}

fn result<T: serde::Serialize>(r: Result<T, String>) -> serde_json::Value {
    match r {
        Ok(v) => serde_json::json!({ "ok": v }),
        Err(e) => serde_json::json!({ "err": e }),
    }
}

export!(Probe);
