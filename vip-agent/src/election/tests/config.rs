//! Settings validation.

use super::*;

#[test]
fn config_validation_names_flags() {
    let mut c = ElectionConfig::new("n");
    assert!(c.validate().is_ok());
    c.renew_deadline = Duration::from_millis(4600);
    let e = c.validate().expect_err("too close").to_string();
    assert!(
        e.contains("--renew-deadline") && e.contains("--lease-duration"),
        "{e}"
    );
    c.renew_deadline = Duration::from_secs(3);
    c.retry_period = Duration::from_secs(3);
    assert!(
        c.validate()
            .expect_err("retry")
            .to_string()
            .contains("--retry-period")
    );
    c.retry_period = Duration::ZERO;
    assert_eq!(
        c.validate(),
        Err(ConfigError::Zero {
            flag: "--retry-period"
        })
    );
    // Sub-second settings are fine.
    let c = ElectionConfig {
        lease_duration: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(200),
        ..ElectionConfig::new("n")
    };
    assert!(c.validate().is_ok());
    assert_eq!(c.margin(), Duration::from_millis(250));
}
