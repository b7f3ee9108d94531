//! Values that are checked once, at the edge, by their constructor; past it the
//! rest of the code takes them as given.

use crate::error::AppError;
use secrecy::{ExposeSecret, SecretString};

/// A lower-cased email address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Email, AppError> {
        let s = raw.trim().to_lowercase();
        let valid = s.len() <= 254
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !s.chars().any(char::is_whitespace)
                    && s.matches('@').count() == 1
            });
        if valid {
            Ok(Email(s))
        } else {
            Err(AppError::invalid(
                field,
                "must be an email address such as ada@example.com",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as typed; never printed, never serialized.
pub struct Password(SecretString);

pub const MIN_PASSWORD_CHARS: usize = 10;

impl Password {
    pub fn parse(field: &str, raw: String) -> Result<Password, AppError> {
        let n = raw.chars().count();
        if n < MIN_PASSWORD_CHARS {
            return Err(AppError::invalid(
                field,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if n > 256 {
            return Err(AppError::invalid(field, "must be at most 256 characters"));
        }
        Ok(Password(SecretString::from(raw)))
    }

    /// A password given at sign-in is only compared, never held to the rules
    /// (they may have changed since it was set).
    pub fn for_check(raw: String) -> Password {
        Password(SecretString::from(raw))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A trimmed, non-empty display name of at most `max` characters.
pub fn name(field: &str, raw: &str, max: usize) -> Result<String, AppError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(AppError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s.to_owned())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgName(String);

impl OrgName {
    pub fn parse(field: &str, raw: &str) -> Result<OrgName, AppError> {
        name(field, raw, 100).map(OrgName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(field: &str, raw: &str) -> Result<PersonName, AppError> {
        name(field, raw, 100).map(PersonName)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(
            Email::parse("email", " Ada@Example.COM ").map(|e| e.0),
            Ok("ada@example.com".into())
        );
        for bad in [
            "", "ada", "ada@", "@x.io", "a@b", "a b@x.io", "a@@x.io", "a@x.",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_passwords_name_the_field() {
        let err = Password::parse("new_password", "short".into()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("new_password: must be at least 10 characters")
        );
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            OrgName::parse("name", "  Acme ").map(|n| n.0),
            Ok("Acme".into())
        );
        assert!(OrgName::parse("name", "   ").is_err());
        assert!(OrgName::parse("name", &"x".repeat(101)).is_err());
    }
}
