-- Model versions name their files by artifact-store URL (kiki.artifacts), readable from every
-- node. Rows registered before keep their node-local folder path, which still loads on the
-- node that trained it.
ALTER TABLE ltv_models RENAME COLUMN artifact_path TO artifact_url;
ALTER TABLE churn_models RENAME COLUMN artifact_path TO artifact_url;
-- Creative images likewise: new rows hold a URL; older rows a path under KIKI_HOME.
ALTER TABLE creatives RENAME COLUMN image_path TO image_url;
