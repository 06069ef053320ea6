//! Mutations: logging in and out, passwords and users.

use async_graphql::{Context, Object, Result};

use exim_pilot_store::Role;

use super::types::*;
use super::{api, caller, coded, request_caller};
use crate::auth::{self, password, Actor, Tokens, UserChange};

fn payload(t: Tokens) -> AuthPayload {
    AuthPayload {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_at: t.expires_at,
        user: UserView::from(&t.user),
    }
}

fn role(name: &str) -> Result<Role> {
    name.parse::<Role>().map_err(async_graphql::Error::new)
}

/// Mutations of logins and users.
#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Logs in. Wrong passwords, unknown users and disabled users all get
    /// the same error; repeated failures make later attempts wait.
    async fn login(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
    ) -> Result<AuthPayload> {
        let ip = request_caller(ctx)?.ip;
        let tokens = api(ctx)?
            .auth
            .login(&username, &password, ip)
            .await
            .map_err(coded)?;
        Ok(payload(tokens))
    }

    /// Exchanges a refresh token for new tokens; the old refresh token
    /// stops working.
    async fn refresh(&self, ctx: &Context<'_>, refresh_token: String) -> Result<AuthPayload> {
        let ip = request_caller(ctx)?.ip;
        let tokens = api(ctx)?
            .auth
            .refresh(&refresh_token, ip)
            .await
            .map_err(coded)?;
        Ok(payload(tokens))
    }

    /// Ends the caller's session: its refresh token and access tokens stop
    /// working.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool> {
        let p = caller(ctx, Role::Viewer).await?;
        let ip = request_caller(ctx)?.ip;
        api(ctx)?.auth.logout(p, ip).await.map_err(coded)?;
        Ok(true)
    }

    /// Changes the caller's password; every session of the caller ends.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> Result<bool> {
        let p = caller(ctx, Role::Viewer).await?;
        let ip = request_caller(ctx)?.ip;
        api(ctx)?
            .auth
            .change_password(p, &current_password, &new_password, ip)
            .await
            .map_err(coded)?;
        Ok(true)
    }

    /// Adds a user (admins only). Without a password, one is generated and
    /// returned once.
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        name: String,
        role: String,
        password: Option<String>,
        #[graphql(default)] hosts: Vec<String>,
    ) -> Result<CreatedUser> {
        let p = caller(ctx, Role::Admin).await?;
        let ip = request_caller(ctx)?.ip;
        let role = self::role(&role)?;
        let generated = password.is_none().then(password::generate);
        let secret = password.or(generated.clone()).unwrap_or_default();
        let user = auth::add_user(
            &*api(ctx)?.store,
            &Actor::of(p, ip),
            &name,
            role,
            &secret,
            hosts,
        )
        .await
        .map_err(coded)?;
        Ok(CreatedUser {
            user: UserView::from(&user),
            generated_password: generated,
        })
    }

    /// Changes a user (admins only). Disabling a user or setting their
    /// password ends their sessions.
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        name: String,
        role: Option<String>,
        disabled: Option<bool>,
        hosts: Option<Vec<String>>,
        password: Option<String>,
    ) -> Result<UserView> {
        let p = caller(ctx, Role::Admin).await?;
        let ip = request_caller(ctx)?.ip;
        let change = UserChange {
            role: role.as_deref().map(self::role).transpose()?,
            disabled,
            hosts,
            password,
        };
        let user = api(ctx)?
            .auth
            .update_user(&Actor::of(p, ip), &name, change)
            .await
            .map_err(coded)?;
        Ok(UserView::from(&user))
    }
}
