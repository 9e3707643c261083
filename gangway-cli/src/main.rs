//! The `gangway` command-line tool.

fn main() {
    println!("gangway");
}
