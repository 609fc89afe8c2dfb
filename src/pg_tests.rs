//! Behaviour inside a backend. These run in a transaction that is rolled back.
use pgrx::prelude::*;

#[pg_schema]
mod tests {

    use crate::{connect, keys};
    use pgrx::prelude::*;

    const TOKEN: &str = "EAAGtest-token-0123456789abcdef";

    fn new_connected_tenant(name: &str, waba: &str, phone: &str) -> String {
        let tenant =
            Spi::get_one_with_args::<pgrx::Uuid>("SELECT wa.create_tenant($1)", &[name.into()])
                .expect("create_tenant")
                .expect("tenant id");
        Spi::run_with_args(
            "SELECT wa.connect_tenant($1, $2, $3, $4)",
            &[tenant.into(), waba.into(), phone.into(), TOKEN.into()],
        )
        .expect("connect_tenant");
        tenant.to_string()
    }

    #[pg_test]
    fn stored_token_is_encrypted_and_round_trips() {
        let tenant = new_connected_tenant("Hotel A", "1001", "2001");
        let stored = Spi::get_one_with_args::<Vec<u8>>(
            "SELECT ciphertext FROM wa.credentials WHERE tenant_id = $1::uuid",
            &[tenant.as_str().into()],
        )
        .unwrap()
        .unwrap();
        assert!(!stored.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
        let plain = connect::business_token(&tenant).unwrap();
        assert_eq!(plain.as_str(), TOKEN);
    }

    #[pg_test]
    fn ciphertext_moved_to_another_tenant_does_not_decrypt() {
        let a = new_connected_tenant("Hotel A", "1001", "2001");
        let b = new_connected_tenant("Hotel B", "1002", "2002");
        Spi::run_with_args(
            "UPDATE wa.credentials SET ciphertext = (SELECT ciphertext FROM wa.credentials WHERE tenant_id = $1::uuid)
              WHERE tenant_id = $2::uuid",
            &[a.as_str().into(), b.as_str().into()],
        )
        .unwrap();
        let err = connect::business_token(&b).unwrap_err();
        assert!(
            matches!(err, crate::error::WaError::Undecryptable { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains(TOKEN));
        assert_eq!(connect::business_token(&a).unwrap().as_str(), TOKEN);
    }

    #[pg_test]
    fn keyring_comes_from_the_key_file() {
        let ring = keys::keyring().unwrap();
        assert_eq!(ring.active_key_id(), "pgtest");
    }

    #[pg_test]
    fn superuser_is_treated_as_admin() {
        assert!(crate::authz::caller_is_admin());
    }

    #[pg_test(error = "tenant name must not be empty")]
    fn empty_tenant_name_is_rejected() {
        Spi::run("SELECT wa.create_tenant('   ')").unwrap();
    }

    #[pg_test(error = "waba_id must be a numeric Meta id")]
    fn non_numeric_waba_is_rejected() {
        let tenant = Spi::get_one::<pgrx::Uuid>("SELECT wa.create_tenant('x')")
            .unwrap()
            .unwrap();
        Spi::run_with_args(
            "SELECT wa.connect_tenant($1, 'abc', '2001', $2)",
            &[tenant.into(), TOKEN.into()],
        )
        .unwrap();
    }
}
