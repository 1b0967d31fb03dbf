//! Session attachments: names in bundles of one holder (a token's owner,
//! or a visitor's session), each standing for a complete upload. The
//! adapter says who the holder is; the engine keeps the rules: a name
//! replaced, removed or expired takes its upload with it, in the same
//! transaction as the change of the name.

use super::error::{EngineError, EngineResult};
use super::{media_type_of, run_blocking, Caller, Download, Engine, Staged};
use crate::meta::{AttachmentKey, AttachmentRecord, MetaStore, OwnerLimits, UploadRecord};
use chrono::{SubsecRound, Utc};
use uuid::Uuid;

impl Engine {
    /// Stores `staged` as the attachment `key`, replacing the one of that
    /// name.
    pub async fn attach(
        &self,
        caller: &Caller,
        key: AttachmentKey,
        media_type: String,
        staged: Staged,
    ) -> EngineResult<AttachmentRecord> {
        let (named, kind) = (key.clone(), media_type.clone());
        let insert = move |meta: &dyn MetaStore, row: &UploadRecord, limits: &OwnerLimits| {
            meta.insert_attachment(row, limits, &named, &kind)
        };
        let (upload, _) = self
            .record_staged(staged, caller, key.name.clone(), None, insert)
            .await?;
        Ok(AttachmentRecord {
            key,
            upload_id: upload.id,
            media_type,
            created_at: upload.created_at,
            size: upload.offset,
        })
    }

    /// Attaches the complete upload `id` of the caller as `key` (a large
    /// attachment that came by a resumable protocol). It then goes with
    /// its attachment.
    pub async fn attach_upload(
        &self,
        caller: &Caller,
        key: AttachmentKey,
        id: Uuid,
    ) -> EngineResult<AttachmentRecord> {
        self.check_filename(&key.name)?;
        let upload = self.find(caller, id).await?;
        if !upload.complete {
            return Err(EngineError::Incomplete {
                offset: upload.offset,
                total: upload.total,
            });
        }
        let media_type = media_type_of(&key.name);
        let at = Utc::now().trunc_subsecs(6);
        let (meta, named, kind) = (self.meta.clone(), key.clone(), media_type.clone());
        run_blocking(move || Ok(meta.attach_upload(&named, id, &kind, at)?)).await?;
        Ok(AttachmentRecord {
            key,
            upload_id: id,
            media_type,
            created_at: at,
            size: upload.offset,
        })
    }

    /// A bundle's attachments, by name.
    pub async fn attachments(
        &self,
        holder: &str,
        bundle: &str,
    ) -> EngineResult<Vec<AttachmentRecord>> {
        let (holder, bundle) = (holder.to_owned(), bundle.to_owned());
        self.read_meta(move |meta| meta.list_attachments(&holder, &bundle))
            .await
    }

    /// An attachment and its bytes.
    pub async fn open_attachment(
        &self,
        caller: &Caller,
        key: &AttachmentKey,
    ) -> EngineResult<(AttachmentRecord, Download)> {
        let wanted = key.clone();
        let attachment = self
            .read_meta(move |meta| meta.get_attachment(&wanted))
            .await?
            .ok_or(EngineError::NotFound)?;
        let download = self.open_download(caller, attachment.upload_id).await?;
        Ok((attachment, download))
    }

    /// Removes the attachment `name` of a bundle, or the whole bundle;
    /// how many went.
    pub async fn detach(
        &self,
        holder: &str,
        bundle: &str,
        name: Option<&str>,
    ) -> EngineResult<usize> {
        let (meta, holder, bundle) = (self.meta.clone(), holder.to_owned(), bundle.to_owned());
        let name = name.map(str::to_owned);
        let removed =
            run_blocking(move || Ok(meta.remove_attachments(&holder, &bundle, name.as_deref())?))
                .await?;
        Ok(removed.len())
    }

    /// Removes the attachments older than `--attachment-expiration`;
    /// their files are then orphans for the sweep. How many went.
    pub async fn remove_old_attachments(&self) -> EngineResult<usize> {
        let meta = self.meta.clone();
        let max_age = chrono::TimeDelta::from_std(self.settings.attachment_expiration)
            .map_err(|err| EngineError::Internal(err.to_string()))?;
        let cutoff = Utc::now() - max_age;
        let removed = run_blocking(move || Ok(meta.remove_attachments_before(cutoff)?)).await?;
        Ok(removed.len())
    }
}
