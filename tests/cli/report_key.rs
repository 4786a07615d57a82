//! A `report` node's key names its font by content, not by where the file lives: the same
//! pipeline in two folders, each with its own copy of the font, has the same key.

use crate::support::*;

fn font() -> Option<std::path::PathBuf> {
    [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file())
}

#[test]
fn the_report_key_is_the_same_in_two_folders_with_two_copies_of_the_font() {
    let Some(font) = font() else {
        eprintln!("no DejaVu font here: skipped");
        return;
    };
    let key = |ws: &Ws| -> String {
        let copy = ws.p("fonts/Sans.ttf");
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&font, &copy).unwrap();
        ws.write(
            "p.yaml",
            "stages:\n  r:\n    kind: report\n    params: {title: t}\n",
        );
        let o = ws
            .cmd(&["plan", "p.yaml", "--json"])
            .env("DAGRUN_FONT", &copy)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        plan["nodes"][0]["key"].as_str().unwrap().to_string()
    };
    let (a, b) = (Ws::new(), Ws::new());
    assert_eq!(key(&a), key(&b));
}
