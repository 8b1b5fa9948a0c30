//! Every case of the default bundle, run natively and in the guest: both
//! must pass, and every decision must be identical, byte for byte.

use portcullis_engine::cases::run_case;
use portcullis_engine::{Bundle, MemoryStore};

#[test]
fn native_and_guest_agree_on_every_case() {
    let files = crate::default_files();
    let native = match Bundle::load(&files) {
        Ok(b) => b,
        Err(p) => panic!("native refused the default bundle: {p:#?}"),
    };
    let mut compared = 0usize;
    for file in native.case_files() {
        for case in &file.cases {
            let mut store = MemoryStore::new();
            let (native_result, native_decisions) = run_case(&file.file, case, &mut |r| {
                native.decide(r, &mut store).to_json()
            });

            let mut guest = match crate::runtime().instantiate(Box::new(MemoryStore::new())) {
                Ok(g) => g,
                Err(e) => panic!("cannot instantiate: {e:#}"),
            };
            if let Err(e) = guest.load(files.clone()) {
                panic!("guest refused the default bundle: {e:#?}");
            }
            let (guest_result, guest_decisions) =
                run_case(&file.file, case, &mut |r| guest.decide(r));

            assert!(
                native_result.passed,
                "native failed {}: {:#?}",
                case.name, native_result.failures
            );
            assert!(
                guest_result.passed,
                "guest failed {}: {:#?}",
                case.name, guest_result.failures
            );
            assert_eq!(native_decisions.len(), guest_decisions.len());
            for (i, (n, g)) in native_decisions.iter().zip(&guest_decisions).enumerate() {
                assert_eq!(
                    n,
                    g,
                    "{} :: {} request {} differs between native and guest",
                    file.file,
                    case.name,
                    i + 1
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 40, "only {compared} decisions compared");
}

#[test]
fn guest_case_report_equals_native() {
    let files = crate::default_files();
    let native = match Bundle::load(&files) {
        Ok(b) => b.run_cases(),
        Err(p) => panic!("{p:#?}"),
    };
    let mut guest = match crate::runtime().instantiate(Box::new(MemoryStore::new())) {
        Ok(g) => g,
        Err(e) => panic!("{e:#}"),
    };
    assert!(guest.load(files).is_ok());
    let report = match guest.run_cases() {
        Ok(r) => r,
        Err(e) => panic!("{e:#}"),
    };
    assert_eq!(report, native);
    assert_eq!(report.failed, 0);
}
