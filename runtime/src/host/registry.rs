//! The registry: from the one list of capabilities in `host/mod.rs`, generates everything that
//! enumerates them, so none of it is written (or forgotten) by hand.
//!
//! For a list of `Variant => module::Implementation` lines (each implementation a
//! [`HostCapability`](super::capability::HostCapability)), `capabilities!` defines:
//!
//! - `Capability`: the enum of names, with `ALL`, `name`, `summary`, `needs_grant`,
//!   `grant_example` (used by the loader, `plugin inspect` and grant errors);
//! - `RawGrants`: the `[plugins.NAME.grants]` table, one optional key per capability that needs
//!   a grant, any other key an error naming the accepted ones;
//! - `Grants`: the validated grants of one plugin, and `Grants::validate`;
//! - `Setup`, `Resources`: the runtime-wide settings and shared resources of every capability;
//! - `HostCtx`: the data of one run's store, one context per capability (plus WASI);
//! - `Pending`: what an accepted run leaves to keep, and `Resources::commit`;
//! - `link`: the only function that puts host interfaces into a linker, and only granted ones.
//!
//! Field names are the module names (`grants.log_tail`, `ctx.postgres`). The expansion uses
//! `HostView`, `InvalidGrant`, `GrantKey` and `empty_wasi` from the module that invokes it
//! (`host/mod.rs`). This module must never name a particular capability; the list is the only
//! place that does.

macro_rules! capabilities {
    ($($variant:ident => $module:ident :: $implementation:ident),+ $(,)?) => {
        /// Every interface of `pganalytics:collector`, by the name used in WIT, TOML and logs
        /// alike.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Capability {
            $($variant),+
        }

        impl Capability {
            /// Every capability, in the order of the list.
            pub const ALL: [Capability; [$(stringify!($variant)),+].len()] =
                [$(Capability::$variant),+];

            /// The interface name, which is also the key under `[plugins.NAME.grants]`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Capability::$variant =>
                        <$module::$implementation as $crate::host::capability::HostCapability>::NAME),+
                }
            }

            /// What it gives a plugin, in a few words.
            pub fn summary(self) -> &'static str {
                match self {
                    $(Capability::$variant =>
                        <$module::$implementation as $crate::host::capability::HostCapability>::SUMMARY),+
                }
            }

            /// Whether the operator must grant this interface; the others only touch the
            /// plugin's own settings, log budget and state blob.
            pub fn needs_grant(self) -> bool {
                self.example_body().is_some()
            }

            fn example_body(self) -> Option<&'static str> {
                match self {
                    $(Capability::$variant =>
                        <$module::$implementation as $crate::host::capability::HostCapability>::GRANT_EXAMPLE),+
                }
            }
        }

        /// `[plugins.NAME.grants]` as written: one table per capability that needs a grant,
        /// keyed by its interface name.
        #[derive(Debug, Default)]
        pub struct RawGrants {
            $(pub $module: Option<
                <$module::$implementation as $crate::host::capability::HostCapability>::GrantConfig
            >,)+
        }

        impl<'de> serde::Deserialize<'de> for RawGrants {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = RawGrants;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("struct RawGrants")
                    }

                    // The arms of capabilities that need no grant are unreachable (their key is
                    // refused and their table type is uninhabited).
                    #[allow(unreachable_code)]
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<RawGrants, A::Error> {
                        let mut raw = RawGrants::default();
                        while let Some(GrantKey(capability)) = map.next_key()? {
                            match capability {
                                $(Capability::$variant => {
                                    if raw.$module.is_some() {
                                        return Err(serde::de::Error::duplicate_field(
                                            capability.name(),
                                        ));
                                    }
                                    raw.$module = Some(map.next_value()?);
                                })+
                            }
                        }
                        Ok(raw)
                    }
                }
                deserializer.deserialize_map(Visitor)
            }
        }

        /// The validated grants of one plugin. `None` means not granted.
        #[derive(Debug, Clone, Default)]
        pub struct Grants {
            $(pub $module: Option<std::sync::Arc<
                <$module::$implementation as $crate::host::capability::HostCapability>::Grant
            >>,)+
        }

        impl Grants {
            /// Whether a plugin may import `capability`: granted, or needing no grant.
            pub fn allows(&self, capability: Capability) -> bool {
                match capability {
                    $(Capability::$variant => !capability.needs_grant() || self.$module.is_some()),+
                }
            }

            /// Validates every grant table; every invalid one is reported, not just the first.
            // The arms of capabilities that need no grant are unreachable (uninhabited tables).
            #[allow(unreachable_code)]
            pub fn validate(raw: &RawGrants) -> Result<Grants, Vec<InvalidGrant>> {
                let mut grants = Grants::default();
                let mut invalid = Vec::new();
                $(
                    if let Some(config) = &raw.$module {
                        match <$module::$implementation as $crate::host::capability::HostCapability>::grant(config) {
                            Ok(grant) => grants.$module = Some(std::sync::Arc::new(grant)),
                            Err(error) => invalid.push(InvalidGrant::new(Capability::$variant, error)),
                        }
                    }
                )+
                if invalid.is_empty() { Ok(grants) } else { Err(invalid) }
            }
        }

        /// Runtime-wide settings of every capability (from their own config sections).
        #[derive(Debug, Clone, Default)]
        pub struct Setup {
            $(pub $module:
                <$module::$implementation as $crate::host::capability::HostCapability>::Setup,)+
        }

        /// The shared resources of every capability, for all runs of all plugins of one host.
        /// Cheap to clone.
        #[derive(Clone)]
        pub struct Resources {
            $(pub $module:
                <$module::$implementation as $crate::host::capability::HostCapability>::Shared,)+
        }

        impl Resources {
            /// Builds every capability's resources; `state_dir` is where what must survive a
            /// restart is kept (`None`: in memory only).
            pub fn new(setup: &Setup, state_dir: Option<&std::path::Path>) -> Self {
                Self {
                    $($module: <$module::$implementation as $crate::host::capability::HostCapability>::shared(
                        &setup.$module,
                        state_dir,
                    ),)+
                }
            }

            /// Reads what `plugin` kept on disk in an earlier process, capability by
            /// capability (see `HostCapability::prepare`). Blocks: call it off the async workers.
            pub fn prepare(&self, plugin: &str, grants: &Grants) {
                $(
                    <$module::$implementation as $crate::host::capability::HostCapability>::prepare(
                        &self.$module,
                        grants.$module.as_deref(),
                        plugin,
                    );
                )+
            }

            /// Keeps what an accepted run of `plugin` left, capability by capability in the
            /// order of the list; the first failure stops it.
            pub fn commit(&self, plugin: &str, pending: Pending) -> std::io::Result<()> {
                $(
                    if let Some(pending) = pending.$module {
                        <$module::$implementation as $crate::host::capability::HostCapability>::commit(
                            &self.$module,
                            plugin,
                            pending,
                        )?;
                    }
                )+
                Ok(())
            }
        }

        /// Everything one plugin run can reach: WASI (with nothing in it) and one context per
        /// capability. It is the data of a fresh store, dropped with it at the end of the run.
        pub struct HostCtx {
            pub wasi: wasmtime_wasi::WasiCtx,
            pub table: wasmtime::component::ResourceTable,
            $(pub $module:
                <$module::$implementation as $crate::host::capability::HostCapability>::Ctx,)+
        }

        impl HostCtx {
            /// The contexts of one run of a plugin with `grants`.
            pub fn new(grants: &Grants, resources: &Resources, run: &$crate::host::run::RunInfo) -> Self {
                Self {
                    wasi: empty_wasi(&run.log),
                    table: Default::default(),
                    $($module: <$module::$implementation as $crate::host::capability::HostCapability>::context(
                        grants.$module.clone(),
                        &resources.$module,
                        run,
                    ),)+
                }
            }

            /// What this run leaves to keep, to be committed once its output is accepted.
            pub fn take_pending(&mut self) -> Pending {
                Pending {
                    $($module: <$module::$implementation as $crate::host::capability::HostCapability>::take_pending(
                        &mut self.$module,
                    ),)+
                }
            }
        }

        /// What an accepted run leaves to keep, per capability (`None`: nothing).
        #[derive(Debug, Default)]
        pub struct Pending {
            $(pub $module: Option<
                <$module::$implementation as $crate::host::capability::HostCapability>::Pending
            >,)+
        }

        /// Links WASI and exactly the granted capabilities (and those needing no grant) into
        /// `linker`.
        pub fn link<T: HostView + wasmtime_wasi::WasiView>(
            linker: &mut wasmtime::component::Linker<T>,
            grants: &Grants,
        ) -> wasmtime::Result<()> {
            link_where(linker, |capability| grants.allows(capability))
        }

        /// Links WASI and the capabilities `wanted` accepts into `linker`: [`link`] for a run,
        /// every capability for `plugin inspect`'s check that the host can satisfy each import.
        /// This is the only function that registers host interfaces.
        pub fn link_where<T: HostView + wasmtime_wasi::WasiView>(
            linker: &mut wasmtime::component::Linker<T>,
            wanted: impl Fn(Capability) -> bool,
        ) -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            $(
                if wanted(Capability::$variant) {
                    <$module::$implementation as $crate::host::capability::HostCapability>::add_to_linker(
                        linker,
                        |t: &mut T| &mut t.host().$module,
                    )?;
                }
            )+
            Ok(())
        }
    };
}
