//! Not a worker: a component of another world (it exports a `run` function and no `task`
//! interface). The host must refuse it as a worker, keeping the current version serving.
wit_bindgen::generate!({
    inline: "
        package test:other;
        world other {
            export run: func() -> u32;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        7
    }
}

export!(Other);
